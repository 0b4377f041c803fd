"""The website's contact form and the operators' inbox."""
