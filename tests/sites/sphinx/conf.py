# A small Sphinx project, built by the tests with the pinned Sphinx (requirements.txt).
project = "Harbour"
author = "Lectern tests"
extensions = []
html_theme = "alabaster"
