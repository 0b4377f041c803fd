"""Starts the notifier for the orders benchmark. Where this branch's notifier has no template yet for the
mail the orders service asks for, placeholder ones (plain text, no content) are added in this process only,
so the e-mail stage can be timed with the notifier the branch has. A notifier that has them is untouched."""

from __future__ import annotations

from notifier import mail
from notifier.app import main

TEMPLATES = ("order-confirmation", "license-recovery", "upgrade-notice", "product-news")


def patch() -> bool:
    subjects, bodies = getattr(mail, "SUBJECTS", None), getattr(mail, "BODIES", None)
    if not isinstance(subjects, dict) or not isinstance(bodies, dict):
        return False
    patched = False
    for template in TEMPLATES:
        for locale in ("en", "vi"):
            if (template, locale) not in subjects:
                subjects[(template, locale)] = f"SPM Group: {template} (benchmark placeholder)"
                bodies[(template, locale)] = "Hello {name},\n\nbenchmark placeholder{about}\n\nSPM Group\n"
                patched = True
    return patched


if __name__ == "__main__":
    patch()
    main()
