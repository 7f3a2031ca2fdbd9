# Sphinx configuration of the organage site. The notebooks are first processed by nbdev (`#| hide`,
# `show_doc`, ...) into _proc/, and the executed paper notebooks are copied from reports/<profile>/;
# myst-nb renders them as they are (no execution at build time). Built by `make docs` (docs/build.py).
project = 'organage'
author = 'organage developers'
extensions = ['myst_nb']
nb_execution_mode = 'off'
myst_enable_extensions = ['dollarmath', 'colon_fence']
html_theme = 'sphinx_book_theme'
html_title = 'organage'
html_theme_options = {'show_toc_level': 2, 'navigation_with_keys': False}
exclude_patterns = ['_build', '**.ipynb_checkpoints', '**/.*', 'nbdev.yml', 'sidebar.yml', '_quarto.yml', 'styles.css']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure', 'myst.xref_missing', 'toc.not_included']
source_suffix = {'.ipynb': 'myst-nb', '.md': 'myst-nb'}
html_favicon = 'favicon.png'
