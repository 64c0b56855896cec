"""The ``airflow.plugins`` entry point of the tokentier plugin.

The provider info declares the plugin (``plugins``), but Airflow imports provider-declared
plugins only with ``[core] lazy_discover_providers = False``; the default is ``True``. This
entry point loads it in that default case too, so installing the package is all it takes. With
lazy discovery off, the provider info already brings the plugin in: this attribute is then
``None``, which Airflow skips, so the plugin is registered once either way.
"""

from __future__ import annotations

from airflow import settings

from airflow_provider_tokentier.plugins import TokentierPlugin

#: What the entry point loads: the plugin class, unless the provider info already registers it.
PLUGIN: type[TokentierPlugin] | None = TokentierPlugin if settings.LAZY_LOAD_PROVIDERS else None
