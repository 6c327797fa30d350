"""The StarMap dashboard's static files (``static/``: plain HTML, CSS and ES modules, no build step), served at
``/ui`` by `safesail_guard.server.ui_routes`."""
