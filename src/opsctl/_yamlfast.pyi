from collections.abc import Callable
from typing import Any

INTERFACE: int

def compose(text: str, memo: dict[str, str], str_tag: str, typed_first: bytes,
            scalar: Callable[[str], Any],
            key: Callable[[str], Any], bail: object, max_depth: int, max_values: int,
            max_string: int, /) -> Any: ...
