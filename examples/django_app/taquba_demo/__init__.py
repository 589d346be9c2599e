"""A minimal Django project whose app owns a taquba queue and runs its worker in-process."""
