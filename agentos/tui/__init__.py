"""``agentos top``, the live dashboard (Textual).

``app.py`` is the app and :func:`~agentos.tui.app.run_top` its entry point; ``data.py``
and ``timeline_data.py`` read the store into the values of ``rows.py``; ``commands.py``
writes control commands; every other module is one widget or screen; ``top.tcss`` styles
them all.
"""
