"""Config secrets taken out before anything crosses Ray, and put back in the router actor.

No cluster needed: this is the walk over the config's models (``agentos.cluster.secrets``
does not import Ray); ``test_records.py`` checks what Ray is actually given.
"""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

from agentos.cluster.secrets import split_secrets, with_secrets
from agentos.spec.config import Config, load_config

CONFIG = """
engines:
  - {name: a, type: openai, base_url: "http://127.0.0.1:1", api_key: "${KEY_A}"}
  - {name: b, type: openai, base_url: "http://127.0.0.1:2"}
  - {name: c, type: openai, base_url: "http://127.0.0.1:3", api_key: "sk-inline-key-c"}
vector_store: {type: qdrant, url: "http://127.0.0.1:6333", api_key: "${QDRANT_KEY}"}
serve:
  keys:
    - {name: alice, key: "${ALICE_KEY}"}
"""

KEYS = {
    "KEY_A": "sk-from-env-engine-a",
    "QDRANT_KEY": "qdrant-key-from-env",
    "ALICE_KEY": "alice-serve-key-0123456789",
}


def test_every_secret_is_taken_out_and_put_back(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(textwrap.dedent(CONFIG))
    config = load_config(tmp_path / "config.yaml", environ=KEYS)

    public, secrets = split_secrets(config)

    shipped = pickle.dumps(public)
    for value in [*KEYS.values(), "sk-inline-key-c"]:
        assert value.encode() not in shipped, value
    assert sorted(secrets.values()) == sorted([*KEYS.values(), "sk-inline-key-c"])
    assert secrets[("engines", 0, "api_key")] == "sk-from-env-engine-a"
    assert [e.api_key for e in public.engines] == [None, None, None]
    assert public.serve.keys[0].name == "alice"
    assert public.serve.keys[0].key.get_secret_value() == ""
    assert config.engines[0].api_key is not None, "the driver's own config is unchanged"

    restored = with_secrets(public, secrets)
    assert restored == config
    assert restored.engines[2].api_key is not None
    assert restored.engines[2].api_key.get_secret_value() == "sk-inline-key-c"


def test_a_config_without_secrets_is_shipped_as_it_is() -> None:
    config = Config.model_validate(
        {"engines": [{"name": "a", "type": "openai", "base_url": "http://x:1"}]}
    )
    public, secrets = split_secrets(config)
    assert secrets == {} and public is config
