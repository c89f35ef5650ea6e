"""Kedro datasets that kedro-datasets does not provide (the catalog names them by module)."""
