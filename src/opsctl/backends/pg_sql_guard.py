"""The judge of user-supplied SQL (``postgres.query``): PostgreSQL's own parser, an allow-list.

The statement is parsed with ``pglast`` (libpg_query: the server's grammar, so quoting, comments,
Unicode escapes and ``$$`` strings read as the server reads them) and accepted only when:

* it is exactly one statement: SELECT (including VALUES, TABLE and WITH), SHOW, or EXPLAIN of such
  a statement;
* nowhere in its tree is there INSERT / UPDATE / DELETE / MERGE (writable CTEs), SELECT INTO, a
  locking clause (FOR UPDATE / SHARE), or any other statement;
* every function it calls is on :data:`ALLOWED_FUNCTIONS` (or a read-only family: ``pg_stat_get_*``,
  ``pg_get_*``, ``has_*_privilege``...), unqualified or in ``pg_catalog``; a function that is not
  named here (``pg_terminate_backend``, ``set_config``, ``pg_advisory_lock``, ``dblink``,
  ``query_to_xml`` which runs SQL from a string, any user-defined function) is refused;
* every operator is a built-in one (:data:`ALLOWED_OPERATORS`, also in ``ORDER BY ... USING``; a
  user-defined operator is a function call under another name);
* every type it casts to is a built-in one: a cast to a domain runs its CHECK (any function), so a
  type qualified with another schema is refused, and the unqualified names are checked on the
  server like the functions (:data:`SHADOWED`).

pglast is imported when a statement is judged, never at CLI start-up.  What it cannot see: what a
view or a table's column default does when read (a view calling a volatile function); the READ ONLY
transaction and the read-only role (``opsctl.backends.pg_readonly``) stand behind it for those.
"""

from __future__ import annotations

import re
from typing import Any


def _words(text: str) -> list[str]:
    return text.split()


ALLOWED_FUNCTIONS = frozenset(_words("""
count sum avg min max bool_and bool_or every array_agg string_agg json_agg jsonb_agg json_object_agg
jsonb_object_agg percentile_cont percentile_disc mode stddev stddev_pop stddev_samp variance var_pop
var_samp corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope
regr_sxx regr_sxy regr_syy bit_and bit_or bit_xor range_agg range_intersect_agg
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
abs ceil ceiling floor round trunc sign sqrt cbrt power pow exp ln log log10 mod div pi degrees radians
width_bucket random gcd lcm factorial scale min_scale trim_scale
length char_length character_length octet_length bit_length lower upper initcap substr substring left
right btrim ltrim rtrim lpad rpad replace split_part strpos position concat concat_ws format to_char
to_number to_date to_timestamp regexp_replace regexp_match regexp_matches regexp_split_to_array
regexp_split_to_table regexp_count regexp_instr regexp_like regexp_substr repeat reverse md5 sha256
sha224 sha384 sha512 quote_ident quote_literal quote_nullable starts_with translate ascii chr encode
decode string_to_array string_to_table array_to_string overlay normalize is_normalized unistr
now current_timestamp clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc
date_part extract timezone age make_interval make_date make_time make_timestamp make_timestamptz
justify_days justify_hours justify_interval date_bin isfinite overlaps to_json to_jsonb
json_build_object jsonb_build_object json_build_array jsonb_build_array json_object jsonb_object
row_to_json array_to_json json_array_length jsonb_array_length jsonb_pretty json_typeof jsonb_typeof
json_each jsonb_each json_each_text jsonb_each_text json_array_elements jsonb_array_elements
json_array_elements_text jsonb_array_elements_text json_object_keys jsonb_object_keys
json_extract_path jsonb_extract_path json_extract_path_text jsonb_extract_path_text jsonb_strip_nulls
json_strip_nulls jsonb_set jsonb_insert jsonb_path_query jsonb_path_query_array jsonb_path_query_first
jsonb_path_exists jsonb_path_match json_populate_record jsonb_populate_record json_to_record
jsonb_to_record json_to_recordset jsonb_to_recordset
array_length cardinality unnest array_position array_positions array_remove array_replace array_append
array_prepend array_cat array_dims array_lower array_upper array_ndims generate_series
generate_subscripts num_nonnulls num_nulls
text int2 int4 int8 float4 float8 numeric bool date interval inet cidr host hostmask masklen netmask
network family abbrev broadcast
pg_size_pretty pg_size_bytes format_type pg_typeof pg_encoding_to_char pg_column_size pg_column_compression
pg_database_size pg_relation_size pg_total_relation_size pg_table_size pg_indexes_size
pg_tablespace_size pg_relation_filenode pg_relation_filepath pg_tablespace_location
pg_backend_pid pg_blocking_pids pg_safe_snapshot_blocking_pids pg_postmaster_start_time
pg_conf_load_time pg_current_wal_lsn pg_current_wal_insert_lsn pg_current_wal_flush_lsn
pg_wal_lsn_diff pg_walfile_name pg_walfile_name_offset pg_jit_available pg_trigger_depth
pg_my_temp_schema pg_listening_channels pg_notification_queue_usage pg_current_snapshot
pg_snapshot_xmin pg_snapshot_xmax pg_snapshot_xip pg_visible_in_snapshot pg_current_xact_id_if_assigned
pg_xact_status pg_xact_commit_timestamp txid_current_if_assigned txid_current_snapshot txid_status
mxid_age pg_stat_statements pg_stat_statements_info pg_control_checkpoint pg_control_system
pg_control_init pg_control_recovery pg_lock_status
current_setting current_database current_schema current_schemas current_user session_user user
current_role current_catalog version inet_server_addr inet_server_port inet_client_addr
inet_client_port obj_description col_description shobj_description pg_options_to_table
pg_function_is_visible pg_table_is_visible pg_type_is_visible pg_relation_is_updatable
pg_column_is_updatable pg_describe_object pg_identify_object pg_index_column_has_property
pg_index_has_property pg_indexam_has_property pg_char_to_encoding pg_tablespace_databases
gen_random_uuid similar_to_escape similar_escape
"""))

# families of read-only functions
_ALLOWED_PREFIXES = ("pg_stat_get_", "pg_get_", "pg_is_", "pg_last_", "to_reg", "has_", "pg_has_")
_ALLOWED_SUFFIXES = ("_privilege",)

ALLOWED_OPERATORS = frozenset(_words("""
= <> != < > <= >= + - * / % ^ || ~~ !~~ ~~* !~~* ~ ~* !~ !~* @> <@ && -> ->> #> #>> #- ? ?| ?& @? @@
|/ ||/ @ & | # << >> <<= >>= ~= <-> !! -|- &< &> <<| |>> &<| |&> <^ >^ ?# ?- ?-| ?|| @@@
BETWEEN NOT_BETWEEN BETWEEN_SYMMETRIC NOT_BETWEEN_SYMMETRIC
"""))

_STATEMENTS = ("SelectStmt", "VariableShowStmt", "ExplainStmt")
_NEVER = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "MergeStmt": "MERGE",
          "IntoClause": "SELECT INTO", "LockingClause": "a locking clause (FOR UPDATE / FOR SHARE)"}
# psycopg placeholders (%s, %(name)s, %b, %t, %%), used with `params`
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?([sbt%])")


def function_allowed(name: str) -> bool:
    name = name.lower()
    return (name in ALLOWED_FUNCTIONS or name.startswith(_ALLOWED_PREFIXES)
            or name.endswith(_ALLOWED_SUFFIXES))


def refusal(sql: str, with_params: bool = False) -> str:
    """Why this SQL is not one read-only statement, or "" when it is."""
    return judge(sql, with_params)[0]


def judge(sql: str, with_params: bool = False) -> tuple[str, frozenset[str], frozenset[str]]:
    """(refusal or "", the functions the statement calls by unqualified name, the types it casts
    to by unqualified name).

    An unqualified name is resolved by the server along the search_path, and PostgreSQL picks the
    best match of argument types across all its schemas: a function of the same name created in
    another schema can be chosen over the built-in one, and a type name that is not a built-in one
    is a domain or a table's row type.  The caller checks on the server that these names exist only
    in pg_catalog (:data:`SHADOWED`)."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    none: frozenset[str] = frozenset()
    text = _PLACEHOLDER.sub(lambda m: "%" if m.group(1) == "%" else "$1", sql) if with_params else sql
    try:
        statements = parse_sql(text)
    except ParseError as e:
        return f"not valid SQL: {e}", none, none
    if len(statements) != 1:
        return f"exactly one statement is allowed, got {len(statements)}", none, none
    top = statements[0].stmt
    kind = type(top).__name__
    if kind not in _STATEMENTS:
        return ("only a read-only statement (SELECT, VALUES, TABLE, WITH, SHOW, EXPLAIN) is allowed, "
                f"got {_verb(kind)}"), none, none
    functions: set[str] = set()
    types: set[str] = set()
    for node in _walk(top):
        problem = _judge(node, ast, text)
        if problem:
            return problem, none, none
        if isinstance(node, ast.FuncCall) and len(node.funcname or ()) == 1:
            functions.add(_names(node.funcname)[0].lower())
        elif isinstance(node, ast.RangeTableSample) and len(node.method or ()) == 1:
            functions.add(_names(node.method)[0].lower())  # TABLESAMPLE SYSTEM: a handler function
        elif isinstance(node, ast.TypeName) and len(node.names or ()) == 1:
            types.add(_names(node.names)[0].lower())
    return "", frozenset(functions), frozenset(types)


# The unqualified names that also exist outside pg_catalog (run with the function names and the
# type names): (name, schema, "function" | "type").
SHADOWED = """
SELECT p.proname, n.nspname, 'function' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY(%s) AND n.nspname <> 'pg_catalog'
UNION
SELECT t.typname, n.nspname, 'type' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typname = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""
# schemas whose types a statement may cast to (their domains check with built-in functions only)
_TYPE_SCHEMAS = (["pg_catalog"], ["information_schema"])


def _verb(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", kind.removesuffix("Stmt")).upper() or kind


def _walk(node: Any) -> Any:
    from pglast import ast

    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Node):
            yield n
            stack.extend(getattr(n, attr) for attr in n)
        elif isinstance(n, list | tuple):
            stack.extend(n)


def _at(text: str, location: int | None) -> str:
    if location is None or location < 0:
        return ""
    line = text.count("\n", 0, location) + 1
    column = location - (text.rfind("\n", 0, location) + 1) + 1
    return f" (at line {line}, column {column})"


def _names(parts: Any) -> list[str]:
    return [getattr(p, "sval", "") or "" for p in parts or ()]


def _judge(node: Any, ast: Any, text: str) -> str:
    kind = type(node).__name__
    if kind in _NEVER:
        where = _at(text, getattr(node, "location", None))
        return f"{_NEVER[kind]} is not allowed in a read-only statement{where}"
    if kind != "SelectStmt" and kind.endswith("Stmt") and kind not in _STATEMENTS:
        return f"{_verb(kind)} is not allowed in a read-only statement"
    if isinstance(node, ast.FuncCall):
        parts = _names(node.funcname)
        schema, name = (parts[:-1], parts[-1]) if parts else ([], "")
        if schema and schema != ["pg_catalog"]:
            return (f"function {'.'.join(parts)}() is not on the read-only allow-list (only built-in "
                    f"functions, unqualified or in pg_catalog){_at(text, node.location)}")
        if not function_allowed(name):
            return (f"function {name}() is not on the read-only allow-list (catalog reads, aggregates, "
                    "formatting, date/time, JSON and array functions); use a dedicated action such as "
                    f"postgres.terminate / postgres.cancel for changes{_at(text, node.location)}")
    if isinstance(node, ast.TypeName):
        parts = _names(node.names)
        if parts[:-1] and parts[:-1] not in _TYPE_SCHEMAS:
            return (f"a cast to type {'.'.join(parts)} is not allowed in a read-only statement (only "
                    "built-in types: a domain's CHECK may call any function)"
                    f"{_at(text, getattr(node, 'location', None))}")
    if isinstance(node, ast.RangeTableSample):
        parts = _names(node.method)
        if parts[:-1] and parts[:-1] != ["pg_catalog"]:
            return f"TABLESAMPLE method {'.'.join(parts)} is not a built-in one"
    operator = (node.name if isinstance(node, ast.A_Expr) else node.operName if isinstance(node, ast.SubLink)
                else node.useOp if isinstance(node, ast.SortBy) else None)
    if operator:
        parts = _names(operator)
        op = parts[-1].upper().replace(" ", "_") if parts else ""
        if (parts[:-1] and parts[:-1] != ["pg_catalog"]) or (op and op not in ALLOWED_OPERATORS):
            return (f"operator {'.'.join(parts)} is not a built-in operator on the read-only allow-list"
                    f"{_at(text, getattr(node, 'location', None))}")
    return ""


_EXPLAINABLE = {"SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
                "DeleteStmt": "DELETE"}


def explainable(sql: str) -> tuple[str, int]:
    """(refusal or "", the highest $n parameter) for a statement to EXPLAIN without running it:
    exactly one SELECT / INSERT / UPDATE / DELETE, parsed by PostgreSQL's grammar (an EXPLAIN,
    ANALYZE included, or a second statement after a semicolon is refused)."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        statements = parse_sql(sql)
    except ParseError as e:
        return f"not valid SQL: {e}", 0
    if len(statements) != 1:
        return f"exactly one statement can be explained, got {len(statements)}", 0
    kind = type(statements[0].stmt).__name__
    if kind not in _EXPLAINABLE:
        return f"only SELECT, INSERT, UPDATE or DELETE can be explained, got {_verb(kind)}", 0
    params = [int(n.number or 0) for n in _walk(statements[0].stmt) if isinstance(n, ast.ParamRef)]
    return "", max(params, default=0)
