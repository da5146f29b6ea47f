"""End-to-end tests of the demo web app in headless Chromium (``tox -- tests.browser``)."""
