/*
 * jsonsnap's optional compiled fast paths (module backend._speedups).
 *
 * Each function here does, in one pass of C, what the package also does in
 * pure Python, value by value; the callers keep that way for installs without
 * a compiler (backend/speedups.py), and the tests check that both give the
 * same bytes. This module only changes how fast an export runs.
 *
 * - cut_positions: for layout.cut_positions, the shard cut test run on every key.
 * - encode_rows: for the PostgreSQL dialect's _NativeRows: COPY text lines ->
 *   each row's key and pretty JSON, as its _RowEncoder makes them, so the
 *   server only runs a plain COPY (as pg_dump does) instead of printing JSON.
 * - differing_rows: for layout.differing_rows, the rows at which two versions
 *   of a shard differ, for the commit summary, without splitting either into
 *   one object per row.
 * - copy_out: for the PostgreSQL dialect, a COPY ... TO STDOUT read on
 *   psycopg2's own connection in runs of rows, as psql reads it: psycopg2's
 *   copy_expert hands each row to Python on its own, taking the GIL for it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320).            */

static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t
crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static PyObject *
cut_positions(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *keys, *multiplier_obj, *limit_obj;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &keys, &PyLong_Type, &multiplier_obj,
                          &PyLong_Type, &limit_obj))
        return NULL;
    unsigned long long multiplier = PyLong_AsUnsignedLongLong(multiplier_obj);
    unsigned long long limit = PyLong_AsUnsignedLongLong(limit_obj);
    if (PyErr_Occurred()) /* negative, or wider than 64 bits */
        return NULL;
    PyObject *cuts = PyList_New(0);
    if (cuts == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "cut_positions: keys must be bytes");
            goto fail;
        }
        uint64_t crc = crc32_of((const unsigned char *)PyBytes_AS_STRING(key),
                                PyBytes_GET_SIZE(key));
        if ((uint64_t)(crc * (uint64_t)multiplier) < (uint64_t)limit) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(cuts, index) < 0) {
                Py_XDECREF(index);
                goto fail;
            }
            Py_DECREF(index);
        }
    }
    return cuts;
fail:
    Py_DECREF(cuts);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* A growable byte buffer, usable without the GIL: on failure it only says so. */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static int
buffer_reserve(Buffer *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_RawRealloc(b->data, (size_t)cap);
    if (data == NULL)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int
buffer_add(Buffer *b, const char *p, Py_ssize_t n)
{
    if (buffer_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, (size_t)n);
    b->len += n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* COPY text -> JSON, one value.                                              */

/* Column kinds, as backend/dialects/postgresql.py numbers them. */
enum {
    KIND_RAW = 0,         /* integers: COPY text is the JSON number */
    KIND_QUOTED = 1,      /* codec.TEXT_QUOTED: the text, in quotes */
    KIND_STRING = 2,      /* strings: COPY-unescaped, then JSON-escaped as orjson does */
    KIND_BOOLEAN = 3,     /* t / f */
    KIND_TIMESTAMP = 4,   /* ISO 8601: 'T' for the first space */
    KIND_TIMESTAMPTZ = 5, /* the same, and the bare +00 offset as +00:00 */
    KIND_PYTHON = 6,      /* a memo of encoded values, then the column's encoder */
};

typedef struct {
    int kind;
    PyObject *encoder; /* borrowed: the exact Python encoder of COPY text, or None */
    PyObject *memo;    /* borrowed: dict COPY text -> JSON, or None */
} Column;

static int
is_null(const char *p, Py_ssize_t n)
{
    return n == 2 && p[0] == '\\' && p[1] == 'N';
}

/* Whether a value goes to Python: every value of a Python column, and the
   texts the C cases below do not expect (an escape where none belongs, a
   boolean neither t nor f). Strings are UTF-8, as the export's client encoding
   is (see the dialect's _in_utf8): PostgreSQL converts and checks them. */
static int
needs_python(const Column *col, const char *p, Py_ssize_t n)
{
    if (is_null(p, n) || col->kind == KIND_STRING)
        return 0;
    if (col->kind == KIND_PYTHON || memchr(p, '\\', (size_t)n) != NULL)
        return 1;
    return col->kind == KIND_BOOLEAN && !(n == 1 && (p[0] == 't' || p[0] == 'f'));
}

static const char HEX[] = "0123456789abcdef";

/* One byte of a string's content, escaped as orjson escapes it; room is reserved. */
static void
add_json_byte(Buffer *out, unsigned char c)
{
    if (c >= 0x20 && c != '"' && c != '\\') {
        out->data[out->len++] = (char)c;
        return;
    }
    char short_form = 0;
    switch (c) {
    case '"': short_form = '"'; break;
    case '\\': short_form = '\\'; break;
    case '\b': short_form = 'b'; break;
    case '\t': short_form = 't'; break;
    case '\n': short_form = 'n'; break;
    case '\f': short_form = 'f'; break;
    case '\r': short_form = 'r'; break;
    }
    if (short_form) {
        out->data[out->len++] = '\\';
        out->data[out->len++] = short_form;
    } else {
        memcpy(out->data + out->len, "\\u00", 4);
        out->data[out->len + 4] = HEX[c >> 4];
        out->data[out->len + 5] = HEX[c & 0xF];
        out->len += 6;
    }
}

/* What a COPY escape \c stands for; any other escaped byte stands for itself. */
static unsigned char
copy_unescape(unsigned char c)
{
    switch (c) {
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'v': return '\v';
    default: return c;
    }
}

static int
add_string(Buffer *out, const unsigned char *p, Py_ssize_t n)
{
    /* At most six bytes out for each byte in, and the quotes. */
    if (buffer_reserve(out, 6 * n + 2) < 0)
        return -1;
    out->data[out->len++] = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\\' && i + 1 < n)
            c = copy_unescape(p[++i]);
        add_json_byte(out, c);
    }
    out->data[out->len++] = '"';
    return 0;
}

static int
add_quoted(Buffer *out, const char *p, Py_ssize_t n)
{
    if (buffer_reserve(out, n + 2) < 0)
        return -1;
    out->data[out->len++] = '"';
    memcpy(out->data + out->len, p, (size_t)n);
    out->len += n;
    out->data[out->len++] = '"';
    return 0;
}

static int
add_timestamp(Buffer *out, const char *p, Py_ssize_t n, int with_zone)
{
    if (n == 0 || p[0] < '0' || p[0] > '9' || (n >= 3 && memcmp(p + n - 3, " BC", 3) == 0))
        return add_quoted(out, p, n); /* infinity, or before year 1 */
    if (buffer_reserve(out, n + 5) < 0)
        return -1;
    char *start = out->data + out->len;
    start[0] = '"';
    memcpy(start + 1, p, (size_t)n);
    char *space = memchr(start + 1, ' ', (size_t)n);
    if (space != NULL)
        *space = 'T';
    out->len += 1 + n;
    if (with_zone)
        buffer_add(out, ":00", 3); /* reserved above */
    out->data[out->len++] = '"';
    return 0;
}

/* A value `needs_python` says C handles; needs no GIL. */
static int
add_native(Buffer *out, const Column *col, const char *p, Py_ssize_t n)
{
    if (is_null(p, n))
        return buffer_add(out, "null", 4);
    switch (col->kind) {
    case KIND_STRING:
        return add_string(out, (const unsigned char *)p, n);
    case KIND_QUOTED:
        return add_quoted(out, p, n);
    case KIND_BOOLEAN:
        return p[0] == 't' ? buffer_add(out, "true", 4) : buffer_add(out, "false", 5);
    case KIND_TIMESTAMP:
    case KIND_TIMESTAMPTZ:
        return add_timestamp(out, p, n, col->kind == KIND_TIMESTAMPTZ);
    default: /* KIND_RAW */
        return buffer_add(out, p, n);
    }
}

/* A value `needs_python` sends to Python: the JSON bytes, a new reference. */
static PyObject *
python_value(const Column *col, const char *p, Py_ssize_t n)
{
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *value = NULL;
    if (col->kind == KIND_PYTHON) {
        value = PyDict_GetItemWithError(col->memo, raw); /* borrowed */
        if (value != NULL) {
            Py_DECREF(raw);
            if (!PyBytes_Check(value)) {
                PyErr_SetString(PyExc_TypeError, "encode_rows: a memo holds something not bytes");
                return NULL;
            }
            return Py_NewRef(value);
        }
        if (PyErr_Occurred()) {
            Py_DECREF(raw);
            return NULL;
        }
    }
    if (col->encoder == Py_None) /* integers: the text as it stands */
        return raw;
    value = PyObject_CallOneArg(col->encoder, raw);
    Py_DECREF(raw);
    if (value != NULL && !PyBytes_Check(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "encode_rows: an encoder returned something not bytes");
        return NULL;
    }
    return value;
}

/* ------------------------------------------------------------------------ */
/* encode_rows(chunk, parts, kinds, encoders, memos, key_index) -> (keys, rows)
 *
 * In four steps, so that the GIL is held only where Python is: split the lines
 * into fields (no GIL); encode the values that need Python (GIL); lay out every
 * row and key in two buffers (no GIL); make them bytes objects (GIL). */

typedef struct {
    Py_ssize_t width;
    Column *columns;
    const char **parts; /* width + 1 */
    Py_ssize_t *part_lens;
    Py_ssize_t keys;
    Py_ssize_t *key_index;
} Plan;

typedef struct {
    const char *p;
    Py_ssize_t n;
} Field;

typedef struct {
    Field *fields;     /* lines * width */
    PyObject **python; /* lines * width: the values Python encoded, else NULL */
    Py_ssize_t lines;
    Buffer rows, keys;
    Py_ssize_t *row_ends, *key_ends; /* lines each */
} Work;

static int
plan_of(Plan *plan, PyObject *parts, PyObject *kinds, PyObject *encoders, PyObject *memos,
        PyObject *key_index)
{
    Py_ssize_t width = PyTuple_GET_SIZE(encoders);
    if (PyTuple_GET_SIZE(parts) != width + 1 || PyBytes_GET_SIZE(kinds) != width ||
        PyTuple_GET_SIZE(memos) != width || width == 0) {
        PyErr_SetString(PyExc_ValueError, "encode_rows: the plan's lengths disagree");
        return -1;
    }
    plan->width = width;
    plan->columns = PyMem_Calloc((size_t)width, sizeof(Column));
    plan->keys = PyTuple_GET_SIZE(key_index);
    plan->key_index = PyMem_Calloc((size_t)plan->keys + 1, sizeof(Py_ssize_t));
    plan->parts = PyMem_Calloc((size_t)width + 1, sizeof(char *));
    plan->part_lens = PyMem_Calloc((size_t)width + 1, sizeof(Py_ssize_t));
    if (!plan->columns || !plan->key_index || !plan->parts || !plan->part_lens) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i <= width; i++) {
        PyObject *part = PyTuple_GET_ITEM(parts, i);
        if (!PyBytes_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "encode_rows: parts must be bytes");
            return -1;
        }
        plan->parts[i] = PyBytes_AS_STRING(part);
        plan->part_lens[i] = PyBytes_GET_SIZE(part);
    }
    const char *codes = PyBytes_AS_STRING(kinds);
    for (Py_ssize_t i = 0; i < width; i++) {
        Column *col = &plan->columns[i];
        col->kind = codes[i];
        col->encoder = PyTuple_GET_ITEM(encoders, i);
        col->memo = PyTuple_GET_ITEM(memos, i);
        if (col->kind < KIND_RAW || col->kind > KIND_PYTHON ||
            (col->kind == KIND_PYTHON && (!PyDict_Check(col->memo) || col->encoder == Py_None))) {
            PyErr_SetString(PyExc_ValueError, "encode_rows: a column's kind or encoder is wrong");
            return -1;
        }
    }
    for (Py_ssize_t k = 0; k < plan->keys; k++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(key_index, k));
        if (index == -1 && PyErr_Occurred())
            return -1;
        if (index < 0 || index >= width) {
            PyErr_SetString(PyExc_ValueError, "encode_rows: a key column is out of range");
            return -1;
        }
        plan->key_index[k] = index;
    }
    return 0;
}

static void
plan_free(Plan *plan)
{
    PyMem_Free(plan->columns);
    PyMem_Free(plan->key_index);
    PyMem_Free(plan->parts);
    PyMem_Free(plan->part_lens);
}

/* Step 1, no GIL. 0: done; -1: out of memory; -2: a line without `width` fields. */
static int
split_fields(const Plan *plan, const char *chunk, Py_ssize_t len, Work *work)
{
    Py_ssize_t lines = 1;
    for (const char *p = chunk, *end = chunk + len; (p = memchr(p, '\n', (size_t)(end - p)));
         p++)
        lines++;
    Py_ssize_t width = plan->width;
    work->lines = lines;
    work->fields = PyMem_RawMalloc((size_t)(lines * width) * sizeof(Field));
    work->python = PyMem_RawCalloc((size_t)(lines * width), sizeof(PyObject *));
    work->row_ends = PyMem_RawMalloc((size_t)lines * sizeof(Py_ssize_t));
    work->key_ends = PyMem_RawMalloc((size_t)lines * sizeof(Py_ssize_t));
    if (!work->fields || !work->python || !work->row_ends || !work->key_ends)
        return -1;
    Field *field = work->fields;
    Py_ssize_t pos = 0; /* offsets, not pointers: a line's end may be the chunk's */
    for (Py_ssize_t line = 0; line < lines; line++) {
        const char *newline = memchr(chunk + pos, '\n', (size_t)(len - pos));
        Py_ssize_t line_end = newline ? newline - chunk : len;
        for (Py_ssize_t i = 0; i < width; i++, field++) {
            const char *tab = memchr(chunk + pos, '\t', (size_t)(line_end - pos));
            Py_ssize_t stop = tab ? tab - chunk : line_end;
            if ((stop == line_end) != (i == width - 1))
                return -2;
            field->p = chunk + pos;
            field->n = stop - pos;
            pos = stop + 1;
        }
        pos = line_end + 1;
    }
    return 0;
}

/* Step 2, with the GIL. */
static int
encode_in_python(const Plan *plan, Work *work)
{
    Py_ssize_t width = plan->width;
    for (Py_ssize_t i = 0; i < work->lines * width; i++) {
        const Column *col = &plan->columns[i % width];
        const Field *field = &work->fields[i];
        if (needs_python(col, field->p, field->n)) {
            work->python[i] = python_value(col, field->p, field->n);
            if (work->python[i] == NULL)
                return -1;
        }
    }
    return 0;
}

/* Step 3, no GIL. 0: done; -1: out of memory. */
static int
lay_out(const Plan *plan, Work *work)
{
    Py_ssize_t width = plan->width;
    Py_ssize_t *starts = PyMem_RawMalloc((size_t)width * 2 * sizeof(Py_ssize_t));
    if (starts == NULL)
        return -1;
    Py_ssize_t *ends = starts + width;
    Buffer *row = &work->rows, *key = &work->keys;
    for (Py_ssize_t line = 0; line < work->lines; line++) {
        Py_ssize_t row_start = row->len;
        for (Py_ssize_t i = 0; i < width; i++) {
            const Field *field = &work->fields[line * width + i];
            PyObject *python = work->python[line * width + i];
            if (buffer_add(row, plan->parts[i], plan->part_lens[i]) < 0)
                goto fail;
            starts[i] = row->len - row_start;
            if ((python ? buffer_add(row, PyBytes_AS_STRING(python), PyBytes_GET_SIZE(python))
                        : add_native(row, &plan->columns[i], field->p, field->n)) < 0)
                goto fail;
            ends[i] = row->len - row_start;
        }
        if (buffer_add(row, plan->parts[width], plan->part_lens[width]) < 0)
            goto fail;
        work->row_ends[line] = row->len;
        if (plan->keys) {
            if (buffer_add(key, "[", 1) < 0)
                goto fail;
            for (Py_ssize_t k = 0; k < plan->keys; k++) {
                Py_ssize_t i = plan->key_index[k];
                /* row->data may have moved: offsets, not pointers */
                if ((k && buffer_add(key, ",", 1) < 0) ||
                    buffer_add(key, row->data + row_start + starts[i], ends[i] - starts[i]) < 0)
                    goto fail;
            }
            if (buffer_add(key, "]", 1) < 0)
                goto fail;
            work->key_ends[line] = key->len;
        }
    }
    PyMem_RawFree(starts);
    return 0;
fail:
    PyMem_RawFree(starts);
    return -1;
}

/* Step 4, with the GIL: the pieces of `buffer` ending at `ends`, as a list of bytes. */
static PyObject *
bytes_list(const Buffer *buffer, const Py_ssize_t *ends, Py_ssize_t count)
{
    PyObject *list = PyList_New(count);
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; list && i < count; i++) {
        PyObject *item = PyBytes_FromStringAndSize(buffer->data + start, ends[i] - start);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
        start = ends[i];
    }
    return list;
}

static void
work_free(Work *work, Py_ssize_t width)
{
    if (work->python)
        for (Py_ssize_t i = 0; i < work->lines * width; i++)
            Py_XDECREF(work->python[i]);
    PyMem_RawFree(work->fields);
    PyMem_RawFree(work->python);
    PyMem_RawFree(work->row_ends);
    PyMem_RawFree(work->key_ends);
    PyMem_RawFree(work->rows.data);
    PyMem_RawFree(work->keys.data);
}

static PyObject *
encode_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *chunk, *parts, *kinds, *encoders, *memos, *key_index;
    /* bytes, not any buffer: it must not change while the GIL is released */
    if (!PyArg_ParseTuple(args, "SO!O!O!O!O!", &chunk, &PyTuple_Type, &parts, &PyBytes_Type,
                          &kinds, &PyTuple_Type, &encoders, &PyTuple_Type, &memos, &PyTuple_Type,
                          &key_index))
        return NULL;
    Plan plan = {0};
    Work work = {0};
    PyObject *keys = NULL, *rows = NULL, *result = NULL;
    int status = 0;
    if (plan_of(&plan, parts, kinds, encoders, memos, key_index) < 0)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    status = split_fields(&plan, PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk), &work);
    Py_END_ALLOW_THREADS
    if (status == -2) {
        PyErr_Format(PyExc_ValueError, "encode_rows: a COPY line without %zd fields", plan.width);
        goto done;
    }
    if (status < 0 || encode_in_python(&plan, &work) < 0)
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    status = lay_out(&plan, &work);
    Py_END_ALLOW_THREADS
    if (status < 0)
        goto fail;
    rows = bytes_list(&work.rows, work.row_ends, work.lines);
    if (rows != NULL)
        keys = plan.keys ? bytes_list(&work.keys, work.key_ends, work.lines) : Py_NewRef(rows);
    if (rows && keys)
        result = PyTuple_Pack(2, keys, rows);
    goto done;
fail:
    if (!PyErr_Occurred())
        PyErr_NoMemory();
done:
    Py_XDECREF(keys);
    Py_XDECREF(rows);
    work_free(&work, plan.width);
    plan_free(&plan);
    return result;
}

/* ------------------------------------------------------------------------ */
/* differing_rows(old, new, separator) -> [(old_start, old_end, new_start, new_end)] | None */

/* A separator, with the byte its searches look for: the first that is neither
   a space nor a newline ('}' in "\n  },\n"), which memchr finds several times
   faster than memmem finds the whole. */
typedef struct {
    const char *bytes;
    Py_ssize_t len;
    Py_ssize_t anchor;
} Separator;

static Separator
separator_of(const char *bytes, Py_ssize_t len)
{
    Py_ssize_t anchor = 0;
    while (anchor < len - 1 && (bytes[anchor] == ' ' || bytes[anchor] == '\n'))
        anchor++;
    return (Separator){bytes, len, anchor};
}

static int
starts_with(const char *p, const char *end, const Separator *sep)
{
    return end - p >= sep->len && memcmp(p, sep->bytes, (size_t)sep->len) == 0;
}

/* The first occurrence of the separator in [p, end), or end. */
static const char *
find(const char *p, const char *end, const Separator *sep)
{
    if (end - p < sep->len)
        return end;
    for (const char *q = p + sep->anchor; q < end; q++) {
        q = memchr(q, sep->bytes[sep->anchor], (size_t)(end - q));
        if (q == NULL)
            break;
        if (starts_with(q - sep->anchor, end, sep))
            return q - sep->anchor;
    }
    return end;
}

/* The last occurrence lying wholly in [p, end), or NULL. A plain backward
   loop (memrchr is not standard C): the start of a row is near. */
static const char *
find_last(const char *p, const char *end, const Separator *sep)
{
    for (Py_ssize_t i = (end - p) - sep->len; i >= 0; i--)
        if (p[i + sep->anchor] == sep->bytes[sep->anchor] && starts_with(p + i, end, sep))
            return p + i;
    return NULL;
}

/* How many bytes a and b share from their start. */
static Py_ssize_t
common_prefix(const char *a, const char *b, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i + 4096 <= n && memcmp(a + i, b + i, 4096) == 0)
        i += 4096;
    while (i + 64 <= n && memcmp(a + i, b + i, 64) == 0)
        i += 64;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

typedef struct {
    Py_ssize_t *offsets; /* four per differing piece */
    Py_ssize_t count;
    Py_ssize_t cap;
} Pieces;

static int
add_piece(Pieces *pieces, Py_ssize_t o_start, Py_ssize_t o_end, Py_ssize_t n_start,
          Py_ssize_t n_end)
{
    if (pieces->count == pieces->cap) {
        Py_ssize_t cap = pieces->cap ? 2 * pieces->cap : 64;
        Py_ssize_t *grown = PyMem_RawRealloc(pieces->offsets, 4 * (size_t)cap * sizeof(Py_ssize_t));
        if (grown == NULL)
            return -1;
        pieces->offsets = grown;
        pieces->cap = cap;
    }
    Py_ssize_t *at = pieces->offsets + 4 * pieces->count++;
    at[0] = o_start;
    at[1] = o_end;
    at[2] = n_start;
    at[3] = n_end;
    return 0;
}

/* 0: done; 1: not as many pieces on both sides; -1: out of memory. Needs no GIL.
 *
 * Splits both sides as bytes.split does, but skips the runs the two share with
 * one memcmp: o and n always stand at the start of a piece, on both sides at
 * once. Within a shared run, the occurrences that lie wholly inside it are the
 * same pieces' ends on both sides, so the piece holding the first difference
 * starts after the last of them; from there, one piece is compared as split
 * makes it. A separator overlapping that last occurrence (impossible in a data
 * file) could make split choose otherwise: then each piece is split in turn. */
static int
find_differing(const char *old, Py_ssize_t old_len, const char *new, Py_ssize_t new_len,
               const Separator *sep, Pieces *pieces)
{
    const char *o = old, *o_end = old + old_len;
    const char *n = new, *n_end = new + new_len;
    int skip = 1;
    for (;;) {
        if (skip) {
            Py_ssize_t shared = common_prefix(o, n, Py_MIN(o_end - o, n_end - n));
            if (o + shared == o_end && n + shared == n_end)
                return 0;
            const char *last = find_last(o, o + shared, sep);
            if (last != NULL) {
                for (Py_ssize_t i = Py_MAX(0, (last - o) - sep->len + 1); i < last - o; i++)
                    if (starts_with(o + i, last + sep->len, sep))
                        skip = 0;
                if (skip) {
                    n += last + sep->len - o;
                    o = last + sep->len;
                }
            }
        }
        const char *o_stop = find(o, o_end, sep);
        const char *n_stop = find(n, n_end, sep);
        if ((o_stop == o_end) != (n_stop == n_end))
            return 1;
        if ((o_stop - o != n_stop - n || memcmp(o, n, (size_t)(o_stop - o)) != 0) &&
            add_piece(pieces, o - old, o_stop - old, n - new, n_stop - new) < 0)
            return -1;
        if (o_stop == o_end)
            return 0;
        o = o_stop + sep->len;
        n = n_stop + sep->len;
    }
}

static PyObject *
differing_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *old, *new, *sep;
    /* bytes, not any buffer: they must not change while the GIL is released */
    if (!PyArg_ParseTuple(args, "SSS", &old, &new, &sep))
        return NULL;
    PyObject *result = NULL;
    Pieces pieces = {0};
    int status = 0;
    if (PyBytes_GET_SIZE(sep) == 0) {
        PyErr_SetString(PyExc_ValueError, "differing_rows: empty separator");
        goto done;
    }
    Separator separator = separator_of(PyBytes_AS_STRING(sep), PyBytes_GET_SIZE(sep));
    const char *old_bytes = PyBytes_AS_STRING(old), *new_bytes = PyBytes_AS_STRING(new);
    Py_ssize_t old_len = PyBytes_GET_SIZE(old), new_len = PyBytes_GET_SIZE(new);
    /* Shards run to hundreds of kilobytes: the other threads go on meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    status = find_differing(old_bytes, old_len, new_bytes, new_len, &separator, &pieces);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (status > 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyList_New(pieces.count);
    for (Py_ssize_t i = 0; result && i < pieces.count; i++) {
        Py_ssize_t *at = pieces.offsets + 4 * i;
        PyObject *pair = Py_BuildValue("(nnnn)", at[0], at[1], at[2], at[3]);
        if (pair == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, pair);
    }
done:
    PyMem_RawFree(pieces.offsets);
    return result;
}

/* ------------------------------------------------------------------------ */
/* copy_out(pgconn, libpq, sql, limit, sink): COPY TO STDOUT in runs of rows. */

/* libpq's functions, by the addresses the caller found in the very library
   psycopg2 uses: its connection must only ever meet its own libpq. Opaque
   pointers stand for PGconn and PGresult. */
typedef struct {
    void *(*exec_params)(void *conn, const char *query, int count, const unsigned int *types,
                         const char *const *values, const int *lengths, const int *formats,
                         int result_format);
    int (*result_status)(const void *result);
    char *(*result_error_message)(const void *result);
    char *(*result_error_field)(const void *result, int field);
    void (*clear)(void *result);
    int (*get_copy_data)(void *conn, char **row, int async);
    void (*freemem)(void *memory);
    void *(*get_result)(void *conn);
    char *(*error_message)(const void *conn);
    int (*transaction_status)(const void *conn);
} LibPQ;

#define LIBPQ_FUNCTIONS 10
enum { PGRES_COMMAND_OK = 1, PGRES_COPY_OUT = 3, PQTRANS_INTRANS = 2, PG_DIAG_SQLSTATE = 'C' };

static PyObject *CopyFailed;

static int
libpq_of(PyObject *addresses, LibPQ *libpq)
{
    if (PyTuple_GET_SIZE(addresses) != LIBPQ_FUNCTIONS) {
        PyErr_Format(PyExc_ValueError, "copy_out: libpq needs %d function addresses",
                     LIBPQ_FUNCTIONS);
        return -1;
    }
    void **slots = (void **)libpq;
    for (Py_ssize_t i = 0; i < LIBPQ_FUNCTIONS; i++) {
        slots[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(addresses, i));
        if (slots[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "copy_out: a null libpq function");
            return -1;
        }
    }
    return 0;
}

/* Raises CopyFailed(message, sqlstate) from a failed result, or from the
   connection when there is none (it was lost); clears the result. */
static void
copy_failed(const LibPQ *libpq, void *conn, void *result)
{
    const char *message = result ? libpq->result_error_message(result) : NULL;
    const char *state = result ? libpq->result_error_field(result, PG_DIAG_SQLSTATE) : NULL;
    if (message == NULL || *message == '\0')
        message = libpq->error_message(conn);
    /* The message as bytes: libpq's own may be in the locale's encoding. */
    PyObject *error = Py_BuildValue("(yz)", message ? message : "", state);
    if (error != NULL) {
        PyErr_SetObject(CopyFailed, error);
        Py_DECREF(error);
    }
    if (result)
        libpq->clear(result);
}

/* After the COPY, libpq has its final result and then none: the query was one
   statement (PQexecParams takes no more). A second result is not expected, and
   the caller reports it as an error, after clearing it. */
static void *
copy_result(const LibPQ *libpq, void *conn, int *extra)
{
    void *result = libpq->get_result(conn);
    void *next = result ? libpq->get_result(conn) : NULL;
    *extra = next != NULL;
    if (next != NULL)
        libpq->clear(next);
    return result;
}

/* Reads rows into `buffer` until it holds `limit` bytes or the COPY ends (1),
   or libpq fails (-2, the connection is gone), or memory runs out (-1). */
static int
read_rows(const LibPQ *libpq, void *conn, Buffer *buffer, Py_ssize_t limit)
{
    while (buffer->len < limit) {
        char *row = NULL;
        int size = libpq->get_copy_data(conn, &row, 0);
        if (size == -1)
            return 1;
        if (size < 0)
            return -2;
        int status = buffer_add(buffer, row, size);
        libpq->freemem(row);
        if (status < 0)
            return -1;
    }
    return 0;
}

static PyObject *
copy_out(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *conn_address, *addresses, *sql, *sink;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!O!SnO", &PyLong_Type, &conn_address, &PyTuple_Type,
                          &addresses, &sql, &limit, &sink))
        return NULL;
    if (limit < 1) { /* else no row would ever be read, and the COPY never end */
        PyErr_SetString(PyExc_ValueError, "copy_out: the limit must be at least 1 byte");
        return NULL;
    }
    const char *query = PyBytes_AS_STRING(sql);
    if (strlen(query) != (size_t)PyBytes_GET_SIZE(sql)) {
        PyErr_SetString(PyExc_ValueError, "copy_out: a NUL byte in the query");
        return NULL;
    }
    LibPQ libpq;
    void *conn = PyLong_AsVoidPtr(conn_address);
    if (conn == NULL || libpq_of(addresses, &libpq) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "copy_out: no connection");
        return NULL;
    }
    /* Outside its transaction, the COPY would read another moment than the
       other tables: refuse rather than mix two snapshots. */
    if (libpq.transaction_status(conn) != PQTRANS_INTRANS) {
        PyErr_SetString(PyExc_RuntimeError, "copy_out: the connection is not in a transaction");
        return NULL;
    }
    void *result;
    Py_BEGIN_ALLOW_THREADS
    /* Not PQexec: PQexecParams runs one statement only, so nothing can follow the COPY. */
    result = libpq.exec_params(conn, query, 0, NULL, NULL, NULL, NULL, 0);
    Py_END_ALLOW_THREADS
    if (result == NULL || libpq.result_status(result) != PGRES_COPY_OUT) {
        copy_failed(&libpq, conn, result);
        return NULL;
    }
    libpq.clear(result);
    Buffer buffer = {0};
    int status = 0;
    while (status == 0) {
        buffer.len = 0;
        Py_BEGIN_ALLOW_THREADS
        status = read_rows(&libpq, conn, &buffer, limit);
        Py_END_ALLOW_THREADS
        if (status < 0 || buffer.len == 0)
            break;
        /* Every row of COPY's text format ends in a newline; the sink takes the
           lines between them. */
        if (buffer.data[buffer.len - 1] != '\n') {
            PyMem_RawFree(buffer.data);
            PyErr_SetString(PyExc_ValueError, "copy_out: a COPY row without its newline");
            return NULL;
        }
        PyObject *lines = PyBytes_FromStringAndSize(buffer.data, buffer.len - 1);
        PyObject *done = lines ? PyObject_CallOneArg(sink, lines) : NULL;
        Py_XDECREF(lines);
        if (done == NULL) {
            PyMem_RawFree(buffer.data);
            return NULL; /* mid-COPY: the caller must drop the connection */
        }
        Py_DECREF(done);
    }
    PyMem_RawFree(buffer.data);
    if (status == -1)
        return PyErr_NoMemory();
    if (status == -2) {
        copy_failed(&libpq, conn, NULL);
        return NULL;
    }
    int extra;
    Py_BEGIN_ALLOW_THREADS
    result = copy_result(&libpq, conn, &extra);
    Py_END_ALLOW_THREADS
    if (result == NULL || libpq.result_status(result) != PGRES_COMMAND_OK) {
        copy_failed(&libpq, conn, result);
        return NULL;
    }
    libpq.clear(result);
    if (extra) {
        PyErr_SetString(PyExc_RuntimeError, "copy_out: a result after the COPY's own");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"cut_positions", cut_positions, METH_VARARGS,
     "cut_positions(keys, multiplier, limit): indexes i with "
     "(crc32(keys[i]) * multiplier) mod 2**64 < limit."},
    {"encode_rows", encode_rows, METH_VARARGS,
     "encode_rows(chunk, parts, kinds, encoders, memos, key_index) -> (keys, rows)."},
    {"differing_rows", differing_rows, METH_VARARGS,
     "differing_rows(old, new, separator): offsets of the unequal pieces, or None "
     "if the two split into different numbers of pieces."},
    {"copy_out", copy_out, METH_VARARGS,
     "copy_out(pgconn, libpq, sql, limit, sink): runs the COPY TO STDOUT `sql` on "
     "the libpq connection, calling sink(lines) for each run of at least `limit` "
     "bytes of whole rows (without the last newline); raises CopyFailed(message "
     "bytes, sqlstate)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "jsonsnap's optional compiled fast paths.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    crc_init();
    PyObject *self = PyModule_Create(&module);
    if (self == NULL)
        return NULL;
    CopyFailed = PyErr_NewException("backend._speedups.CopyFailed", NULL, NULL);
    if (PyModule_AddObjectRef(self, "CopyFailed", CopyFailed) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}
