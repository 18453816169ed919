/* The worker's cut of a CSV range into blocks, one pass over a piece's bytes (sluiceway.blocks).

   blocks.Cutter calls cut() for each piece of a range as it streams; the Python code around it
   slices the blocks and hashes them (hashlib). The rule is blocks.py's, and
   tests/unit/test_blocks.py holds both ways to the same reference, a record at a time: a record
   ends at a newline outside quotes (an even count of quote characters since it began); a block
   ends after a record whose CRC-32 (of its bytes without the last newline) has its low bits
   (`mask`) zero, after `max_records` records, or once it holds `max_bytes`.

   Optional: built by hatch_build.py when a C compiler is there; without it blocks.py cuts with
   C loops of Python's own (about 5x slower, the same blocks). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint32_t table[8][256]; /* CRC-32 (zlib's polynomial), sliced by 8 */

static void
crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
}

/* zlib.crc32(bytes, crc): the CRC of `len` more bytes after those `crc` covers */
static uint32_t
crc32_more(uint32_t crc, const unsigned char *p, size_t len)
{
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
#endif
    while (len--)
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static int
append(PyObject *list, Py_ssize_t value)
{
    PyObject *item = PyLong_FromSsize_t(value);
    if (item == NULL)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

PyDoc_STRVAR(cut_doc,
"cut(piece, mask, max_records, max_bytes, quoted, crc, records, carried, prev_cr, pending)\n"
"\n"
"The blocks that end in `piece`, given the state the pieces before it left: `quoted` (a\n"
"quoted field goes on), `crc` (the CRC-32 of the record begun so far), `records` (whole\n"
"records in the block begun so far), `carried` (that block's bytes so far), `prev_cr` (the\n"
"last byte before `piece` was CR), `pending` (a record is begun). Returns (stops, counts,\n"
"quoted, crc, records, prev_cr, pending, crlf_ends, record_ends): each block's end (an\n"
"offset in `piece`, past its newline) and its records, the state after `piece`, and how many\n"
"records ended in `piece`, with CR LF and in all.");

static PyObject *
cut(PyObject *self, PyObject *args)
{
    Py_buffer view;
    unsigned long mask, crc_in;
    Py_ssize_t max_records, max_bytes, records, carried;
    int quoted, prev_cr, pending;
    if (!PyArg_ParseTuple(args, "y*knnpknnpp", &view, &mask, &max_records, &max_bytes, &quoted,
                          &crc_in, &records, &carried, &prev_cr, &pending))
        return NULL;
    const unsigned char *s = view.buf;
    const Py_ssize_t n = view.len;
    uint32_t crc = (uint32_t)crc_in;
    Py_ssize_t crlf = 0, ends = 0;
    Py_ssize_t rec_start = 0;   /* the current record's first byte in this piece */
    Py_ssize_t block_start = 0; /* the current block's first byte in this piece ... */
    Py_ssize_t base = carried;  /* ... and its bytes before it */
    PyObject *stops = PyList_New(0), *counts = PyList_New(0);
    if (stops == NULL || counts == NULL)
        goto fail;
    Py_ssize_t i = 0;
    while (i < n) {
        if (quoted) {
            const unsigned char *q = memchr(s + i, '"', (size_t)(n - i));
            if (q == NULL)
                break;
            i = q - s + 1;
            quoted = 0;
            continue;
        }
        Py_ssize_t j = i;
        while (j < n && s[j] != '"' && s[j] != '\n')
            j++;
        if (j == n)
            break;
        if (s[j] == '"') {
            quoted = 1;
            i = j + 1;
            continue;
        }
        /* a newline outside quotes: a record ends at j */
        crc = crc32_more(crc, s + rec_start, (size_t)(j - rec_start));
        crlf += j > 0 ? s[j - 1] == '\r' : prev_cr;
        ends++;
        records++;
        if ((crc & mask) == 0 || records >= max_records || j + 1 - block_start + base >= max_bytes) {
            if (append(stops, j + 1) < 0 || append(counts, records) < 0)
                goto fail;
            records = 0;
            block_start = j + 1;
            base = 0;
        }
        crc = 0;
        rec_start = j + 1;
        pending = 0;
        i = j + 1;
    }
    if (rec_start < n) {
        crc = crc32_more(crc, s + rec_start, (size_t)(n - rec_start));
        pending = 1;
    }
    if (n > 0)
        prev_cr = s[n - 1] == '\r';
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNikniinn)", stops, counts, quoted, (unsigned long)crc, records,
                         prev_cr, pending, crlf, ends);
fail:
    Py_XDECREF(stops);
    Py_XDECREF(counts);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS, cut_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_blockcut", "A CSV range's cut into blocks, in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__blockcut(void)
{
    crc_init();
    return PyModule_Create(&module);
}
