#!/usr/bin/env python
"""Django's command-line utility for the taquba demo project.

python examples/django_app/manage.py taquba_worker &   # the one process that owns the queue
python examples/django_app/manage.py runserver         # web processes: submit and look up
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taquba_demo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
