-- A closed day's page views (a day whose salt is destroyed: no view can be added to it) are kept as these
-- aggregates only; its rows, and so their visitor hashes, are deleted. The hashes of one day could link a
-- visitor's views to each other for as long as they were kept; the aggregates cannot.
CREATE TABLE pageview_days (
    day      date   PRIMARY KEY,
    views    bigint NOT NULL,
    visitors bigint NOT NULL
);

-- Per day, each group the trends show: a page ([path]) or referrer ([host]) by views, an entry or exit page
-- ([path]) by visits, a move ([path, next path]) by moves; and its distinct visitors that day.
CREATE TABLE pageview_groups (
    day      date   NOT NULL,
    kind     text   NOT NULL CHECK (kind IN ('page', 'referrer', 'entry', 'exit', 'move')),
    key      text[] NOT NULL,
    count    bigint NOT NULL,
    visitors bigint NOT NULL,
    PRIMARY KEY (kind, day, key)
);
