"""Shared test helpers (plain modules, importable from any test folder: ``tests/`` is on
``sys.path`` once ``tests/conftest.py`` is loaded). Fixtures live in ``conftest.py`` files;
what a test module imports lives here, not in a ``conftest.py``: two ``conftest.py`` files
in folders without ``__init__.py`` share the module name ``conftest``, so ``from conftest
import ...`` would find whichever was loaded last."""
