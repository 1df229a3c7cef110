"""The web view: Klein routes for the page and the JSON API, live events, access rules."""
