"""Flower's configuration file for ``tsbatch flower``, which passes it as ``--conf``; Flower exec()s it.

Flower splits ``FLOWER_BASIC_AUTH`` and ``--basic_auth`` on commas: a password ``pa,ss:word`` became two
credentials, ``user:pa`` and ``ss:word``, and the second logged in alone (issue #8). A list set in a
configuration file is taken whole (tornado's ``parse_config_file``: "a list of str or a comma-separated
string"). The credential arrives in a variable of ``tsbatch flower``'s own environment, taken out here
before Flower starts: it is never in argv (``ps``) or on disk. Naming this file also keeps Flower from
executing a ``flowerconfig.py`` that happens to lie in the current directory.
"""

import os

basic_auth = [os.environ.pop("TSBATCH_FLOWER_CREDENTIAL")]
cookie_secret = os.environ.pop("TSBATCH_FLOWER_COOKIE_SECRET")
