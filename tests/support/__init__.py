"""Helpers shared by the tests: backend roots and emulators (``backends``), a manual clock
(``clock``), a fault-injecting filesystem (``faulty``), a counting HTTP proxy
(``httpcount``), the helpers of the ``Queue`` API tests (``queues``), and the scripts that
tests run as child processes (``*_child``).

``tests/`` is on ``sys.path`` (``tests/conftest.py`` puts it there), so tests import
``from support.backends import BackendRoot``; a child script puts ``tests/`` there itself.
"""
