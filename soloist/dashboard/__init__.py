"""The web dashboard (`soloist dashboard`, extra `soloist[dashboard]`): queues, workers, dead
letters and tasks on one page that updates itself, and a JSON API under /api/ it reads.

`board` gathers the data (from the broker and result store, read at most once a second
whatever the number of open pages), `security` decides who may read and act, `server` is the
Starlette app; the page is static HTML and plain JavaScript (no build step, no CDN).
"""
