/* opsctl._yamlfast: the common case of opsctl.loader in C, over libyaml's event parser.
 *
 * compose(text, memo, str_tag, typed_first, scalar, key, bail, max_depth, max_values, max_string)
 *   -> the document's plain data (a dict), or `bail` when the text is not the common case.
 *
 * The common case is a single document whose root is a mapping, made only of mappings with unique
 * string keys, sequences and scalars, without tags, within the limits; an alias is a fresh copy of
 * its anchor's data, counted and nested where it is placed, as the Python path builds it.  For
 * that case the result is exactly what opsctl.loader's builder makes of PyYAML's node tree (the
 * tests compare the two on the shipped runbooks and on thousands of fuzzed ones).  Anything else:
 * a syntax error, a duplicate key, a non-string key, a recursive or undefined alias, a tag, a
 * value the builder would refuse, a limit reached, a second document... returns `bail`, and the caller takes the full path
 * (PyYAML's node tree and the builder), which names every error with its position.  This module
 * reports no errors and keeps no positions: positions are only needed for an error, and the
 * source map composes the node tree again when first asked for one.
 *
 * Plain scalars: one whose first character is not in `typed_first` (the ASCII characters PyYAML's
 * YAML 1.1 implicit types start with) is a string; `memo` maps short plain texts to their tag
 * (opsctl.yamltags), and a text it knows as `str_tag` is a string too; any other plain scalar goes
 * to `scalar(text)` (a value) or `key(text)` (a key), which return its value or `bail`.  Quoted
 * and block scalars are strings.
 *
 * Why C: building Python objects from libyaml's events was two thirds of `opsctl validate`'s time
 * per file (PyYAML's composer makes a node and two marks per value, then the builder walks them).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <yaml.h>

typedef struct {
    PyObject *container; /* a dict or a list (a borrowed reference: the parent holds it) */
    PyObject *key;       /* a mapping's pending key (owned), NULL while a key is expected */
    PyObject *anchor;    /* the container's anchor name (owned), or NULL */
    Py_ssize_t first;    /* values counted before this container */
    Py_ssize_t sub;      /* how deep collections nest below it (0: none) */
} Frame;

typedef struct {
    PyObject *memo, *str_tag, *scalar, *key, *bail;
    char typed_first[128]; /* ASCII first characters that a YAML 1.1 implicit type may start with */
    Py_ssize_t max_depth, max_values, max_string, count;
    Frame *stack;
    Py_ssize_t depth;  /* frames in use */
    PyObject *root;    /* owned */
    PyObject *anchors; /* name -> (value, values in it, nesting below it or -1 for a scalar);
                        * None while the anchored collection is open (owned, made when needed) */
} State;

/* 1: a string the memo knows as str, 0: not, -1: error */
static int
memo_says_str(State *st, PyObject *text)
{
    PyObject *tag = PyDict_GetItemWithError(st->memo, text); /* borrowed */
    if (tag == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (tag == st->str_tag)
        return 1;
    if (!PyUnicode_Check(tag))
        return 0;
    return PyUnicode_Compare(tag, st->str_tag) == 0;
}

/* Attach a new value (a new reference, stolen) to the frame on top of the stack, or make it the
 * root.  0: done, 1: bail, -1: error. */
static int
attach(State *st, PyObject *value, int is_scalar)
{
    if (st->depth == 0) {
        if (st->root != NULL) { /* a second root: not one document */
            Py_DECREF(value);
            return 1;
        }
        st->root = value;
        return 0;
    }
    Frame *top = &st->stack[st->depth - 1];
    if (PyList_CheckExact(top->container)) {
        int rc = PyList_Append(top->container, value);
        Py_DECREF(value);
        return rc < 0 ? -1 : 0;
    }
    if (top->key == NULL) { /* a key: a string, not seen before in this mapping */
        if (!is_scalar || !PyUnicode_CheckExact(value)) {
            Py_DECREF(value);
            return 1;
        }
        int seen = PyDict_Contains(top->container, value);
        if (seen != 0) {
            Py_DECREF(value);
            return seen < 0 ? -1 : 1;
        }
        top->key = value;
        return 0;
    }
    int rc = PyDict_SetItem(top->container, top->key, value);
    Py_DECREF(value);
    Py_CLEAR(top->key);
    return rc < 0 ? -1 : 0;
}

/* A plain decimal integer as YAML 1.1 reads one (`42`, `-7`, `0`; not `007`, `1_000`, `0x1f`,
 * `1:30`, which Python types), short enough to need no length check. */
static int
decimal_int(const unsigned char *s, size_t n)
{
    size_t i = (n && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (i >= n || n - i > 18 || s[i] < '0' || s[i] > '9' || (s[i] == '0' && n - i > 1))
        return 0;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* The value of a scalar event: a new reference, `bail` (a new reference), or NULL on error. */
static PyObject *
scalar_value(State *st, yaml_event_t *ev, int as_key)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)ev->data.scalar.value,
                                          (Py_ssize_t)ev->data.scalar.length, "strict");
    if (text == NULL)
        return NULL;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        if (PyUnicode_GET_LENGTH(text) > st->max_string) {
            Py_DECREF(text);
            Py_INCREF(st->bail);
            return st->bail;
        }
        return text;
    }
    unsigned char first = ev->data.scalar.length ? ev->data.scalar.value[0] : 0;
    if (first >= 128 || (first && !st->typed_first[first])) { /* no implicit type starts so */
        if (PyUnicode_GET_LENGTH(text) > st->max_string) {
            Py_DECREF(text);
            Py_INCREF(st->bail);
            return st->bail;
        }
        return text;
    }
    if (!as_key && decimal_int(ev->data.scalar.value, ev->data.scalar.length)) {
        Py_DECREF(text);
        return PyLong_FromString((const char *)ev->data.scalar.value, NULL, 10);
    }
    int known = memo_says_str(st, text);
    if (known < 0) {
        Py_DECREF(text);
        return NULL;
    }
    if (known)
        return text;
    /* typed by the Python side: a value by `scalar`, a key by `key` (a key must be plain text:
     * `<<` and `=` are strings as values but not as keys) */
    PyObject *value = PyObject_CallOneArg(as_key ? st->key : st->scalar, text);
    Py_DECREF(text);
    return value;
}

/* A fresh copy of the data of an anchored node, as the Python path builds the node again for each
 * alias (its containers are new objects; scalars are immutable and shared).  Depth is bounded by
 * max_depth, checked before. */
static PyObject *
deep_copy(PyObject *obj)
{
    if (PyDict_CheckExact(obj)) {
        PyObject *out = PyDict_New(), *k, *v;
        Py_ssize_t pos = 0;
        if (out == NULL)
            return NULL;
        while (PyDict_Next(obj, &pos, &k, &v)) {
            PyObject *copy = deep_copy(v);
            if (copy == NULL || PyDict_SetItem(out, k, copy) < 0) {
                Py_XDECREF(copy);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(copy);
        }
        return out;
    }
    if (PyList_CheckExact(obj)) {
        Py_ssize_t n = PyList_GET_SIZE(obj);
        PyObject *out = PyList_New(n);
        if (out == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *copy = deep_copy(PyList_GET_ITEM(obj, i));
            if (copy == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, copy);
        }
        return out;
    }
    Py_INCREF(obj);
    return obj;
}

/* Note an anchor: `entry` (a new reference, stolen) under its name.  0: done, 1: bail (a second
 * anchor of that name: PyYAML's composer refuses it), -1: error. */
static int
note_anchor(State *st, yaml_char_t *name, PyObject *entry)
{
    if (st->anchors == NULL && (st->anchors = PyDict_New()) == NULL) {
        Py_DECREF(entry);
        return -1;
    }
    PyObject *key = PyUnicode_FromString((const char *)name);
    if (key == NULL) {
        Py_DECREF(entry);
        return -1;
    }
    int seen = PyDict_Contains(st->anchors, key);
    int rc = seen != 0 ? (seen < 0 ? -1 : 1) : (PyDict_SetItem(st->anchors, key, entry) < 0 ? -1 : 0);
    Py_DECREF(key);
    Py_DECREF(entry);
    return rc;
}

static int
expecting_key(State *st)
{
    if (st->depth == 0)
        return 0;
    Frame *top = &st->stack[st->depth - 1];
    return PyDict_CheckExact(top->container) && top->key == NULL;
}

/* One event.  0: go on, 1: bail, 2: the stream ended, -1: error. */
static int
handle(State *st, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_START_EVENT:
    case YAML_DOCUMENT_END_EVENT:
        return 0;
    case YAML_STREAM_END_EVENT:
        return 2;
    case YAML_ALIAS_EVENT: {
        /* the anchored node's data again: unknown (undefined, or still open: recursive) or used
         * as a key, the full path says so */
        if (st->anchors == NULL || expecting_key(st))
            return 1;
        PyObject *name = PyUnicode_FromString((const char *)ev->data.alias.anchor);
        if (name == NULL)
            return -1;
        PyObject *entry = PyDict_GetItemWithError(st->anchors, name); /* borrowed */
        Py_DECREF(name);
        if (entry == NULL)
            return PyErr_Occurred() ? -1 : 1;
        if (!PyTuple_CheckExact(entry))
            return 1;
        Py_ssize_t values = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
        Py_ssize_t sub = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 2));
        if (PyErr_Occurred())
            return -1;
        st->count += values; /* as the Python path counts each expansion (an alias bomb) */
        if (st->count > st->max_values)
            return 1;
        if (sub >= 0) { /* a collection placed at this depth, nested `sub` more below it */
            if (st->depth + sub >= st->max_depth)
                return 1;
            if (st->depth > 0 && st->stack[st->depth - 1].sub < sub + 1)
                st->stack[st->depth - 1].sub = sub + 1;
        }
        PyObject *copy = deep_copy(PyTuple_GET_ITEM(entry, 0));
        if (copy == NULL)
            return -1;
        return attach(st, copy, sub < 0);
    }
    case YAML_SCALAR_EVENT: {
        if (ev->data.scalar.tag != NULL)
            return 1;
        if (++st->count > st->max_values)
            return 1;
        PyObject *value = scalar_value(st, ev, expecting_key(st));
        if (value == NULL)
            return -1;
        if (value == st->bail) {
            Py_DECREF(value);
            return 1;
        }
        if (ev->data.scalar.anchor != NULL) {
            PyObject *entry = Py_BuildValue("(Oni)", value, (Py_ssize_t)1, -1);
            int rc = entry == NULL ? -1 : note_anchor(st, ev->data.scalar.anchor, entry);
            if (rc != 0) {
                Py_DECREF(value);
                return rc;
            }
        }
        return attach(st, value, 1);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int is_map = ev->type == YAML_MAPPING_START_EVENT;
        yaml_char_t *anchor = is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        yaml_char_t *tag = is_map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
        if (tag != NULL || expecting_key(st))
            return 1;
        if (st->depth >= st->max_depth || ++st->count > st->max_values)
            return 1;
        if (anchor != NULL) { /* open: an alias to it before its end is recursive */
            Py_INCREF(Py_None);
            int rc = note_anchor(st, anchor, Py_None);
            if (rc != 0)
                return rc;
        }
        if (st->depth == 0 && !is_map) /* a runbook is a mapping; anything else: the full path */
            return 1;
        PyObject *container = is_map ? PyDict_New() : PyList_New(0);
        if (container == NULL)
            return -1;
        int rc = attach(st, container, 0); /* the parent (or root) now holds it */
        if (rc != 0)
            return rc;
        Frame *f = &st->stack[st->depth];
        f->container = container;
        f->key = NULL;
        f->anchor = NULL;
        if (anchor != NULL && (f->anchor = PyUnicode_FromString((const char *)anchor)) == NULL)
            return -1;
        f->first = st->count - 1;
        f->sub = 0;
        st->depth++;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        if (st->depth == 0)
            return 1;
        st->depth--;
        Frame *f = &st->stack[st->depth];
        Py_CLEAR(f->key);
        if (st->depth > 0 && st->stack[st->depth - 1].sub < f->sub + 1)
            st->stack[st->depth - 1].sub = f->sub + 1;
        if (f->anchor != NULL) {
            PyObject *entry = Py_BuildValue("(Onn)", f->container, st->count - f->first, f->sub);
            int rc = entry == NULL ? -1 : PyDict_SetItem(st->anchors, f->anchor, entry);
            Py_XDECREF(entry);
            Py_CLEAR(f->anchor);
            if (rc < 0)
                return -1;
        }
        return 0;
    }
    default:
        return 1;
    }
}

/* `bail` (a new reference); an error on the way is dropped (the full path meets it again and
 * says it with a position), except an interrupt. */
static PyObject *
bail_after(int rc, PyObject *bail)
{
    if (rc < 0 && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    PyErr_Clear();
    Py_INCREF(bail);
    return bail;
}

static PyObject *
compose(PyObject *self, PyObject *args)
{
    PyObject *text;
    const char *firsts;
    Py_ssize_t n_firsts;
    State st = {0};
    if (!PyArg_ParseTuple(args, "UO!Oy#OOOnnn:compose", &text, &PyDict_Type, &st.memo,
                          &st.str_tag, &firsts, &n_firsts, &st.scalar, &st.key, &st.bail,
                          &st.max_depth, &st.max_values, &st.max_string))
        return NULL;
    for (Py_ssize_t i = 0; i < n_firsts; i++) {
        if ((unsigned char)firsts[i] >= 128) {
            PyErr_SetString(PyExc_ValueError, "typed_first must be ASCII");
            return NULL;
        }
        st.typed_first[(unsigned char)firsts[i]] = 1;
    }
    if (st.max_depth < 1 || st.max_depth > 4096) {
        PyErr_SetString(PyExc_ValueError, "max_depth out of range");
        return NULL;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) /* lone surrogates: not UTF-8 text */
        return bail_after(-1, st.bail);
    st.stack = PyMem_Calloc((size_t)st.max_depth + 1, sizeof(Frame));
    if (st.stack == NULL)
        return PyErr_NoMemory();

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        PyMem_Free(st.stack);
        return PyErr_NoMemory();
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)utf8, (size_t)size);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);

    int rc = 0;
    int documents = 0;
    while (rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = 1; /* a syntax error: the full path locates it */
            break;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT && ++documents > 1)
            rc = 1;
        else
            rc = handle(&st, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    for (Py_ssize_t i = 0; i < st.max_depth + 1; i++) {
        Py_CLEAR(st.stack[i].key);
        Py_CLEAR(st.stack[i].anchor);
    }
    PyMem_Free(st.stack);
    Py_CLEAR(st.anchors);

    if (rc == 2 && st.root != NULL && st.depth == 0 && PyDict_CheckExact(st.root))
        return st.root;
    Py_CLEAR(st.root);
    return bail_after(rc, st.bail);
}

static PyMethodDef methods[] = {
    {"compose", compose, METH_VARARGS,
     "compose(text, memo, str_tag, typed_first, scalar, key, bail, max_depth, max_values, "
     "max_string): "
     "plain data of the common case of a runbook, or bail"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "opsctl._yamlfast",
    "The common case of opsctl.loader, in C over libyaml (see opsctl.loader).", -1, methods,
};

PyMODINIT_FUNC
PyInit__yamlfast(void)
{
    PyObject *m = PyModule_Create(&module);
    /* the version of what compose() takes and returns (bump it with opsctl.loader.FAST_INTERFACE
     * on any change): the loader treats a build of another version, e.g. a stale one left by an
     * editable install, as absent */
    if (m != NULL && PyModule_AddIntConstant(m, "INTERFACE", 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
