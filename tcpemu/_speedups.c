/*
 * tcpemu._speedups: the pump's header prediction in C (optional).
 *
 * take_predicted() walks a batch of frames from a given index and takes every
 * frame that is the plainest case of the pure-Python predicted path
 * (wire.predict_untrusted, ReceivePath._predicted, ConnectionCore.receive_predicted):
 * a known connection with no faults, no VLAN, no listener, not in reliable mode,
 * the segment in order with no SYN, FIN or RST, room in the queue and the stream.
 * It stops at the first frame that is anything else and returns that frame's index;
 * the Python path takes that frame, which is why the stop happens before anything is
 * changed.  What it does to the core, the connection and the message is what the
 * Python path does, value for value: tests feed both the same frames and compare.
 *
 * Built at install time when a C compiler is there (hatch_build.py); without it, or
 * with TCPEMU_PURE_PYTHON=1, the Python path does all of it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

/* what setup() hands over: tcpemu's own types and constants */
static PyTypeObject *core_type;
static PyTypeObject *message_type;
static PyObject *flags_list;      /* wire.FLAGS: 512 TcpFlags */
static PyObject *ts_options;      /* wire._timestamp_options */
static PyObject *ts_cache;        /* wire._TS_OPTIONS, the cache it keeps */
static PyObject *unknown_mac;     /* _connection.UNKNOWN_MAC */
static PyObject *established;     /* TcpState.ESTABLISHED */
static PyObject *expected_kind;   /* SegmentKind.EXPECTED */
static PyObject *inbound;         /* "<" */
static PyObject *empty_str;       /* "" */

/* byte offsets of the core's slots, read from its member descriptors */
enum {
    S_RCV_NXT, S_DST_PORT, S_OOO, S_STREAM, S_MAX_STREAM, S_QUEUE, S_MAX_QUEUE, S_EVENTS,
    S_SYN_SENT, S_STATE, S_SND_UNA, S_SND_NXT, S_UNACKED, S_WSCALE, S_IRS, S_ISS, S_RELIABLE,
    S_TS_RECENT, S_COUNTERS, S_NOW, S_LAST_SEQN_GOT, S_LAST_ACKN_GOT, S_LAST_TSVAL_GOT,
    S_LAST_TSECR_GOT, S_LAST_WIN_GOT, S_STREAM_LEN, S_COUNT
};
static const char *slot_names[S_COUNT] = {
    "rcv_nxt", "dst_port", "_ooo", "_stream", "max_stream", "_queue", "max_queue", "events",
    "syn_sent", "state", "snd_una", "snd_nxt", "_unacked", "wscale", "irs", "iss", "reliable",
    "ts_recent", "_counters", "_now", "last_seqn_got", "last_ackn_got", "last_tsval_got",
    "last_tsecr_got", "last_win_got", "_stream_len",
};
static Py_ssize_t slot_offset[S_COUNT];

static PyObject *s_local_mac, *s_vlan, *s_remote_mac, *s_faults_in, *s_core, *s_listener, *s_trace,
    *s_last_msg, *s_pieces, *s_segments_received, *s_snd_wscale, *s_append;

#define SLOT(obj, i) (*(PyObject **)((char *)(obj) + slot_offset[i]))

static void
set_slot(PyObject *obj, int i, PyObject *value) /* steals value */
{
    PyObject **p = (PyObject **)((char *)obj + slot_offset[i]);
    PyObject *old = *p;
    *p = value;
    Py_XDECREF(old);
}

static PyObject *
setup(PyObject *self, PyObject *args)
{
    PyObject *ctype, *mtype, *fl, *tso, *tsc, *umac, *est, *exp;
    if (!PyArg_ParseTuple(args, "O!O!O!OO!SOO", &PyType_Type, &ctype, &PyType_Type, &mtype, &PyList_Type,
                          &fl, &tso, &PyDict_Type, &tsc, &umac, &est, &exp))
        return NULL;
    if (PyList_GET_SIZE(fl) != 512) {
        PyErr_Format(PyExc_ValueError, "FLAGS must have 512 entries, got %zd", PyList_GET_SIZE(fl));
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)mtype, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the message type must be a tuple subclass");
        return NULL;
    }
    PyObject *dict = ((PyTypeObject *)ctype)->tp_dict;
    for (int i = 0; i < S_COUNT; i++) {
        PyObject *d = PyDict_GetItemString(dict, slot_names[i]);
        if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "the core has no slot %s", slot_names[i]);
            return NULL;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "slot %s is not an object slot", slot_names[i]);
            return NULL;
        }
        slot_offset[i] = m->offset;
    }
    Py_INCREF(ctype); Py_XSETREF(core_type, (PyTypeObject *)ctype);
    Py_INCREF(mtype); Py_XSETREF(message_type, (PyTypeObject *)mtype);
    Py_INCREF(fl); Py_XSETREF(flags_list, fl);
    Py_INCREF(tso); Py_XSETREF(ts_options, tso);
    Py_INCREF(tsc); Py_XSETREF(ts_cache, tsc);
    Py_INCREF(umac); Py_XSETREF(unknown_mac, umac);
    Py_INCREF(est); Py_XSETREF(established, est);
    Py_INCREF(exp); Py_XSETREF(expected_kind, exp);
    Py_RETURN_NONE;
}

static inline uint32_t rd32(const unsigned char *p) { return ((uint32_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }
static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* an int slot read as an unsigned 32-bit value; -1 when it is not one */
static long long
u32_of(PyObject *v)
{
    if (v == NULL || !PyLong_CheckExact(v))
        return -1;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0 || x > 0xFFFFFFFFLL)
        return -1;
    return x;
}

static inline int32_t seq_diff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

/* 1: taken; 0: not the plainest case, nothing changed; -1: an error */
static int
take_one(const unsigned char *f, Py_ssize_t n, PyObject *conns, PyObject *now, double t0, PyObject *touched)
{
    Py_ssize_t start, end, key_at, key_len;
    const unsigned char *t;
    if (n < 54)
        return 0;
    if (f[12] == 0x08 && f[13] == 0x00) {
        if (f[14] != 0x45 || f[23] != 6 || (rd16(f + 20) & 0x3FFF))
            return 0;
        start = 34; end = 14 + rd16(f + 16); key_at = 26; key_len = 12;
    } else if (f[12] == 0x86 && f[13] == 0xdd && n >= 74) {
        if ((f[14] >> 4) != 6 || f[20] != 6)
            return 0;
        start = 54; end = 54 + rd16(f + 18); key_at = 22; key_len = 36;
    } else {
        return 0;
    }
    t = f + start;
    uint16_t off_flags = rd16(t + 12);
    Py_ssize_t doff = (off_flags >> 12) * 4;
    if (end > n || start + doff > end)
        return 0;
    if (doff != 20 && !(doff == 32 && t[20] == 1 && t[21] == 1 && t[22] == 8 && t[23] == 10))
        return 0;
    unsigned flags = off_flags & 0x1FF;
    if (flags & 0x07) /* FIN, SYN, RST: the Python path */
        return 0;
    uint32_t seq = rd32(t + 4), ack = rd32(t + 8);
    uint16_t window = rd16(t + 14), urgent = rd16(t + 18);
    Py_ssize_t plen = end - start - doff;

    PyObject *key = PyBytes_FromStringAndSize((const char *)f + key_at, key_len);
    if (key == NULL)
        return -1;
    PyObject *conn = PyDict_GetItemWithError(conns, key); /* borrowed */
    Py_DECREF(key);
    if (conn == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(conn);
    int result = 0;
    PyObject *mac = NULL, *vlan = NULL, *rmac = NULL, *faults = NULL, *core = NULL, *listener = NULL;
    PyObject *trace = NULL, *snd_wscale = NULL, *options = NULL, *payload = NULL, *raw_options = NULL;
    PyObject *msg = NULL, *record = NULL, *scaled = NULL, *win_got = NULL, *pieces = NULL;
    PyObject *r;
#define GET(var, name) if ((var = PyObject_GetAttr(conn, name)) == NULL) goto error
    GET(mac, s_local_mac);
    if (!PyBytes_CheckExact(mac) || PyBytes_GET_SIZE(mac) > n ||
        memcmp(PyBytes_AS_STRING(mac), f, PyBytes_GET_SIZE(mac)) != 0)
        goto done;
    GET(vlan, s_vlan);
    GET(rmac, s_remote_mac);
    GET(faults, s_faults_in);
    if (vlan != Py_None || rmac == unknown_mac || faults != Py_None)
        goto done;
    GET(listener, s_listener);
    if (listener != Py_None)
        goto done;
    GET(core, s_core);
    if (Py_TYPE(core) != core_type)
        goto done;
    long long rcv_nxt = u32_of(SLOT(core, S_RCV_NXT));
    if (rcv_nxt < 0 || (uint32_t)rcv_nxt != seq || SLOT(core, S_DST_PORT) == NULL ||
        SLOT(core, S_DST_PORT) == Py_None)
        goto done;
    if (SLOT(core, S_RELIABLE) != Py_False)
        goto done;
    PyObject *events = SLOT(core, S_EVENTS);
    if (events == NULL || !PyList_CheckExact(events) || PyList_GET_SIZE(events) != 0)
        goto done;
    PyObject *queue = SLOT(core, S_QUEUE), *max_queue = SLOT(core, S_MAX_QUEUE);
    if (queue == NULL || max_queue == NULL || !PyLong_CheckExact(max_queue))
        goto done;
    Py_ssize_t qlen = PyObject_Length(queue);
    if (qlen < 0)
        goto error;
    long long mq = PyLong_AsLongLong(max_queue);
    if (mq == -1 && PyErr_Occurred())
        goto error;
    if (qlen >= mq)
        goto done;
    PyObject *stream = SLOT(core, S_STREAM), *max_stream = SLOT(core, S_MAX_STREAM);
    long long stream_len = 0;
    if (plen) {
        if (stream == NULL || !PyList_CheckExact(stream) || max_stream == NULL ||
            !PyLong_CheckExact(max_stream) || SLOT(core, S_STREAM_LEN) == NULL ||
            !PyLong_CheckExact(SLOT(core, S_STREAM_LEN)))
            goto done;
        long long ms = PyLong_AsLongLong(max_stream);
        if (ms == -1 && PyErr_Occurred())
            goto error;
        stream_len = PyLong_AsLongLong(SLOT(core, S_STREAM_LEN));
        if (stream_len == -1 && PyErr_Occurred())
            goto error;
        if (plen > ms - stream_len)
            goto done; /* the stream at its bound: the Python path logs it */
        PyObject *ooo = SLOT(core, S_OOO);
        if (ooo == NULL)
            goto done;
        if ((pieces = PyObject_GetAttr(ooo, s_pieces)) == NULL)
            goto error;
        if (!PyDict_CheckExact(pieces) || PyDict_GET_SIZE(pieces) != 0)
            goto done;
    }
    /* the acknowledgment: what _take_ack does in ESTABLISHED, or before our SYN */
    PyObject *syn_sent = SLOT(core, S_SYN_SENT);
    int move_una = 0;
    if (syn_sent == NULL || (syn_sent != Py_True && syn_sent != Py_False))
        goto done;
    if ((flags & 0x10) && syn_sent == Py_True) {
        if (SLOT(core, S_STATE) != established)
            goto done;
        long long una = u32_of(SLOT(core, S_SND_UNA)), nxt = u32_of(SLOT(core, S_SND_NXT));
        if (una < 0 || nxt < 0)
            goto done;
        if (ack != (uint32_t)una && seq_diff(ack, (uint32_t)una) > 0 && seq_diff(ack, (uint32_t)nxt) <= 0) {
            PyObject *unacked = SLOT(core, S_UNACKED);
            if (unacked == NULL)
                goto done;
            int busy = PyObject_IsTrue(unacked);
            if (busy < 0)
                goto error;
            if (busy)
                goto done; /* acknowledged data to drop: the Python path */
            move_una = 1;
        }
    }
    PyObject *wscale = SLOT(core, S_WSCALE);
    if (wscale == NULL)
        goto done;
    long shift = 0;
    if (wscale != Py_None) {
        if ((snd_wscale = PyObject_GetAttr(core, s_snd_wscale)) == NULL)
            goto error;
        shift = PyLong_AsLong(snd_wscale);
        if (shift == -1 && PyErr_Occurred())
            goto error;
        if (shift < 0 || shift > 30)
            goto done;
    }
    PyObject *counters = SLOT(core, S_COUNTERS), *irs = SLOT(core, S_IRS), *iss = SLOT(core, S_ISS);
    if (counters == NULL || irs == NULL || iss == NULL)
        goto done;
    GET(trace, s_trace);

    /* everything that can fail is made before anything is changed */
    if (doff == 32) {
        PyObject *values = PyBytes_FromStringAndSize((const char *)t + 24, 8);
        if (values == NULL)
            goto error;
        /* wire's cache of options tuples first, as _timestamp_options looks there first */
        options = PyDict_GetItemWithError(ts_cache, values);
        if (options != NULL)
            Py_INCREF(options);
        else if (!PyErr_Occurred())
            options = PyObject_CallOneArg(ts_options, values);
        Py_DECREF(values);
        if (options == NULL)
            goto error;
        raw_options = PyBytes_FromStringAndSize((const char *)t + 20, 12);
    } else {
        options = PyTuple_New(0);
        raw_options = PyBytes_FromStringAndSize(NULL, 0);
    }
    payload = PyBytes_FromStringAndSize((const char *)t + doff, plen);
    if (options == NULL || raw_options == NULL || payload == NULL)
        goto error;
    if (shift) {
        scaled = PyLong_FromLong((long)window << shift);
        if (scaled == NULL)
            goto error;
        Py_INCREF(scaled);
        win_got = scaled;
    } else {
        Py_INCREF(Py_None);
        scaled = Py_None;
        if ((win_got = PyLong_FromLong(window)) == NULL)
            goto error;
    }
    msg = message_type->tp_alloc(message_type, 13);
    if (msg == NULL)
        goto error;
    PyObject *fl = PyList_GET_ITEM(flags_list, flags);
    PyObject *items[13] = {
        PyLong_FromUnsignedLong(seq), PyLong_FromUnsignedLong(ack), fl, PyLong_FromLong(window), options,
        payload, expected_kind, now, PyLong_FromLong(urgent), scaled, irs,
        syn_sent == Py_True ? iss : Py_None, Py_None,
    };
    for (int i = 0; i < 13; i++) {
        if (items[i] == NULL) {
            for (int j = 0; j < 13; j++)
                if (j == 0 || j == 1 || j == 3 || j == 8)
                    Py_XDECREF(items[j]);
            goto error;
        }
    }
    for (int i = 0; i < 13; i++) {
        if (!(i == 0 || i == 1 || i == 3 || i == 8))
            Py_INCREF(items[i]); /* the new ints are owned already */
        PyTuple_SET_ITEM(msg, i, items[i]);
    }
    /* Left out of the cyclic collector's lists: a message holds numbers, bytes, an options tuple
       of numbers and bytes, and two enum members, none of which can ever refer back to it, so it
       can be in no cycle.  Tracked, the messages a queue holds would be walked by every older
       collection (in a run of 100,000 unread segments that was half the pump's time). */
    PyObject_GC_UnTrack(msg);
    /* the trace record _predicted makes: (t, "<", seq, ack, flags, window, option bytes, length, "") */
    record = PyTuple_New(9);
    if (record == NULL)
        goto error;
    PyObject *rel = PyFloat_FromDouble(PyFloat_AS_DOUBLE(now) - t0), *fl_int = PyLong_FromLong(flags);
    PyObject *len_int = PyLong_FromSsize_t(plen);
    if (rel == NULL || fl_int == NULL || len_int == NULL) {
        Py_XDECREF(rel); Py_XDECREF(fl_int); Py_XDECREF(len_int);
        goto error;
    }
    PyTuple_SET_ITEM(record, 0, rel);
    PyTuple_SET_ITEM(record, 1, Py_NewRef(inbound));
    PyTuple_SET_ITEM(record, 2, Py_NewRef(PyTuple_GET_ITEM(msg, 0)));
    PyTuple_SET_ITEM(record, 3, Py_NewRef(PyTuple_GET_ITEM(msg, 1)));
    PyTuple_SET_ITEM(record, 4, fl_int);
    PyTuple_SET_ITEM(record, 5, Py_NewRef(PyTuple_GET_ITEM(msg, 3)));
    PyTuple_SET_ITEM(record, 6, Py_NewRef(raw_options));
    PyTuple_SET_ITEM(record, 7, len_int);
    PyTuple_SET_ITEM(record, 8, Py_NewRef(empty_str));
    PyObject_GC_UnTrack(record); /* numbers and strings only: the collector would untrack it on its first pass */
    PyObject *segments = PyObject_GetAttr(counters, s_segments_received);
    if (segments == NULL)
        goto error;
    long long count = PyLong_AsLongLong(segments);
    Py_DECREF(segments);
    if (count == -1 && PyErr_Occurred())
        goto error;
    PyObject *more = PyLong_FromLongLong(count + 1);
    if (more == NULL)
        goto error;

    /* from here on the core moves, as receive_predicted moves it; what follows fails
       only when memory runs out */
    int failed = PyObject_SetAttr(counters, s_segments_received, more);
    Py_DECREF(more);
    if (failed)
        goto error;
    Py_INCREF(now);
    set_slot(core, S_NOW, now);
    if (plen) {
        /* the stream keeps the segment's own bytes object, as _take_data does */
        PyObject *grown = PyLong_FromLongLong(stream_len + plen);
        if (grown == NULL || PyList_Append(stream, payload) < 0) {
            Py_XDECREF(grown);
            goto error;
        }
        set_slot(core, S_STREAM_LEN, grown);
        PyObject *nxt = PyLong_FromUnsignedLong((uint32_t)(seq + (uint32_t)plen));
        if (nxt == NULL)
            goto error;
        set_slot(core, S_RCV_NXT, nxt);
    }
    set_slot(core, S_LAST_SEQN_GOT, Py_NewRef(PyTuple_GET_ITEM(msg, 0)));
    if (flags & 0x10) {
        set_slot(core, S_LAST_ACKN_GOT, Py_NewRef(PyTuple_GET_ITEM(msg, 1)));
        if (move_una)
            set_slot(core, S_SND_UNA, Py_NewRef(PyTuple_GET_ITEM(msg, 1)));
    }
    if (doff == 32) {
        PyObject *tsval = PyLong_FromUnsignedLong(rd32(t + 24)), *tsecr = PyLong_FromUnsignedLong(rd32(t + 28));
        if (tsval == NULL || tsecr == NULL) {
            Py_XDECREF(tsval);
            Py_XDECREF(tsecr);
            goto error;
        }
        set_slot(core, S_TS_RECENT, Py_NewRef(tsval));
        set_slot(core, S_LAST_TSVAL_GOT, tsval);
        set_slot(core, S_LAST_TSECR_GOT, tsecr);
    }
    set_slot(core, S_LAST_WIN_GOT, win_got);
    win_got = NULL;
    if ((r = PyObject_CallMethodOneArg(queue, s_append, msg)) == NULL)
        goto error;
    Py_DECREF(r);
    /* the engine's step after the core */
    if (PyObject_SetAttr(conn, s_last_msg, msg) < 0)
        goto error;
    if ((r = PyObject_CallMethodOneArg(trace, s_append, record)) == NULL)
        goto error;
    Py_DECREF(r);
    if (PySet_Add(touched, conn) < 0)
        goto error;
    result = 1;
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(mac); Py_XDECREF(vlan); Py_XDECREF(rmac); Py_XDECREF(faults); Py_XDECREF(core);
    Py_XDECREF(listener); Py_XDECREF(trace); Py_XDECREF(snd_wscale); Py_XDECREF(options);
    Py_XDECREF(payload); Py_XDECREF(raw_options); Py_XDECREF(msg); Py_XDECREF(record);
    Py_XDECREF(scaled); Py_XDECREF(win_got); Py_XDECREF(pieces); Py_DECREF(conn);
    return result;
#undef GET
}

/* Tell the exception being raised where a walk stopped (exc.<name> = value), so that the
   caller counts what was done before it; a failure to say so leaves the exception as it was. */
static void
note_where(const char *name, Py_ssize_t value)
{
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    PyObject *at = PyLong_FromSsize_t(value);
    if (at == NULL || (exc != NULL && PyObject_SetAttrString(exc, name, at) < 0))
        PyErr_Clear();
    Py_XDECREF(at);
    PyErr_Restore(type, exc, tb);
}

static PyObject *
take_predicted(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "take_predicted takes 6 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *frames = args[0], *conns = args[2], *now = args[3], *touched = args[5];
    if (core_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tcpemu._speedups.setup() was not called");
        return NULL;
    }
    if (!PyList_CheckExact(frames) || !PyDict_CheckExact(conns) || !PyFloat_CheckExact(now) ||
        !PySet_Check(touched)) {
        PyErr_SetString(PyExc_TypeError, "take_predicted(list, int, dict, float, float, set)");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    double t0 = PyFloat_AsDouble(args[4]);
    if ((i == -1 || t0 == -1.0) && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(frames);
    for (; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(frame))
            break;
        int r = take_one((const unsigned char *)PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), conns, now,
                         t0, touched);
        if (r < 0) {
            note_where("tcpemu_index", i); /* the frames before this one were taken */
            return NULL;
        }
        if (r == 0)
            break;
    }
    return PyLong_FromSsize_t(i);
}


/* TPACKET_V2 ring slots: tpacket2_hdr's status, len, snaplen, mac, net, sec, nsec, vlan_tci */
#define TP_STATUS_KERNEL 0u
#define TP_STATUS_USER 1u
#define TP_STATUS_VLAN_VALID 0x10u

/* a ring slot's frame as bytes, the 802.1Q tag put back where the kernel took it off */
static PyObject *
slot_frame(const unsigned char *ring, Py_ssize_t from, Py_ssize_t to, uint32_t status, uint16_t tci)
{
    if (!(status & TP_STATUS_VLAN_VALID))
        return PyBytes_FromStringAndSize((const char *)ring + from, to - from);
    /* as frame[:12] + tag + frame[12:] (a frame shorter than two MACs gets the tag at its end) */
    Py_ssize_t len = to - from, head = len < 12 ? len : 12;
    PyObject *frame = PyBytes_FromStringAndSize(NULL, len + 4);
    if (frame != NULL) {
        char *out = PyBytes_AS_STRING(frame);
        memcpy(out, ring + from, head);
        out[head] = (char)0x81; out[head + 1] = 0x00;
        out[head + 2] = (char)(tci >> 8); out[head + 3] = (char)(tci & 0xFF);
        memcpy(out + head + 4, ring + from + head, len - head);
    }
    return frame;
}

/* Walk up to limit ready slots from head.  With conns (not NULL), the plainest predicted
   frames are taken straight from the ring until the first one that is not (nothing is made
   for them, not even the frame's bytes); that one and every later one become frames for the
   caller, in order. */
static PyObject *
walk_ring(PyObject *const *args, Py_ssize_t nargs, int taking)
{
    Py_ssize_t want = taking ? 9 : 5;
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", taking ? "ring_take" : "ring_batch", want,
                     nargs);
        return NULL;
    }
    Py_ssize_t head = PyLong_AsSsize_t(args[1]), size = PyLong_AsSsize_t(args[2]);
    Py_ssize_t nr = PyLong_AsSsize_t(args[3]), limit = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *conns = NULL, *now = NULL, *touched = NULL;
    double t0 = 0;
    if (taking) {
        conns = args[5]; now = args[6]; touched = args[8];
        t0 = PyFloat_AsDouble(args[7]);
        if (t0 == -1.0 && PyErr_Occurred())
            return NULL;
        if (core_type == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "tcpemu._speedups.setup() was not called");
            return NULL;
        }
        if (!PyDict_CheckExact(conns) || !PyFloat_CheckExact(now) || !PySet_Check(touched)) {
            PyErr_SetString(PyExc_TypeError, "ring_take(ring, head, frame_size, frame_nr, limit, dict, float, float, set)");
            return NULL;
        }
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE) < 0)
        return NULL;
    if (size < 32 || nr < 1 || head < 0 || head >= nr || size * nr > buf.len) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "ring_batch: head, frame size and count do not fit the ring");
        return NULL;
    }
    unsigned char *ring = buf.buf;
    PyObject *frames = PyList_New(0);
    Py_ssize_t truncated = 0, taken = 0, seen = 0;
    if (frames == NULL)
        goto fail;
    while (seen < limit) {
        unsigned char *slot = ring + head * size;
        uint32_t status = __atomic_load_n((uint32_t *)slot, __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER))
            break;
        uint32_t length, snaplen;
        uint16_t mac, tci;
        memcpy(&length, slot + 4, 4);
        memcpy(&snaplen, slot + 8, 4);
        memcpy(&mac, slot + 12, 2);
        memcpy(&tci, slot + 24, 2);
        /* as a slice of the ring would: never past its end */
        Py_ssize_t from = head * size + mac, to = from + snaplen;
        if (from > buf.len)
            from = buf.len;
        if (to > buf.len)
            to = buf.len;
        int r = 0;
        if (taking && PyList_GET_SIZE(frames) == 0 && !(status & TP_STATUS_VLAN_VALID)) {
            r = take_one(ring + from, to - from, conns, now, t0, touched);
            if (r < 0) {
                /* the slots before this one were taken and handed back: say how many */
                note_where("tcpemu_taken", taken);
                note_where("tcpemu_head", head);
                goto fail;
            }
        }
        if (r == 1) {
            taken++;
        } else {
            PyObject *frame = slot_frame(ring, from, to, status, tci);
            if (frame == NULL || PyList_Append(frames, frame) < 0) {
                Py_XDECREF(frame);
                goto fail; /* the slot stays ours: the next call reads it again */
            }
            Py_DECREF(frame);
        }
        seen++;
        if (snaplen < length)
            truncated++;
        __atomic_store_n((uint32_t *)slot, TP_STATUS_KERNEL, __ATOMIC_RELEASE); /* hand the slot back */
        head = head + 1 < nr ? head + 1 : 0;
    }
    PyBuffer_Release(&buf);
    if (taking)
        return Py_BuildValue("(Nnnn)", frames, head, truncated, taken);
    return Py_BuildValue("(Nnn)", frames, head, truncated);
fail:
    Py_XDECREF(frames);
    PyBuffer_Release(&buf);
    return NULL;
}

static PyObject *
ring_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return walk_ring(args, nargs, 0);
}

static PyObject *
ring_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return walk_ring(args, nargs, 1);
}

/* pcapng Enhanced Packet Blocks for a batch of frames with one timestamp, as capture.py's
   _write builds them: head (type 6, total, interface 0, ts, caplen, length), the data cut to
   snaplen, then the tail for the data length mod 4 (padding, epb_flags, end of options) and
   the total again */
static PyObject *
epb_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "epb_batch takes 5 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *frames = args[0], *tails = args[3];
    unsigned long ts_hi = PyLong_AsUnsignedLong(args[1]), ts_lo = PyLong_AsUnsignedLong(args[2]);
    Py_ssize_t snaplen = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(frames) || !PyTuple_CheckExact(tails) || PyTuple_GET_SIZE(tails) != 4 ||
        snaplen < 0 || ts_hi > 0xFFFFFFFFul || ts_lo > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_TypeError, "epb_batch(list of bytes, ts_hi, ts_lo, 4 tails, snaplen)");
        return NULL;
    }
    for (int i = 0; i < 4; i++)
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(tails, i))) {
            PyErr_SetString(PyExc_TypeError, "epb_batch: the tails must be bytes");
            return NULL;
        }
    Py_ssize_t n = PyList_GET_SIZE(frames), size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(frame)) {
            PyErr_SetString(PyExc_TypeError, "epb_batch: every frame must be bytes");
            return NULL;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(frame), cap = len < snaplen ? len : snaplen;
        size += 28 + cap + PyBytes_GET_SIZE(PyTuple_GET_ITEM(tails, cap % 4)) + 4;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i), *tail;
        Py_ssize_t len = PyBytes_GET_SIZE(frame), cap = len < snaplen ? len : snaplen;
        tail = PyTuple_GET_ITEM(tails, cap % 4);
        uint32_t total = (uint32_t)(28 + cap + PyBytes_GET_SIZE(tail) + 4);
        uint32_t head[7] = {6, total, 0, (uint32_t)ts_hi, (uint32_t)ts_lo, (uint32_t)cap, (uint32_t)len};
        for (int k = 0; k < 7; k++) /* little-endian, as the section header says */
            for (int b = 0; b < 4; b++)
                *w++ = (unsigned char)(head[k] >> (8 * b));
        memcpy(w, PyBytes_AS_STRING(frame), cap);
        w += cap;
        memcpy(w, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
        w += PyBytes_GET_SIZE(tail);
        for (int b = 0; b < 4; b++)
            *w++ = (unsigned char)(total >> (8 * b));
    }
    return Py_BuildValue("(Nn)", out, size);
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS, "setup(core_type, message_type, FLAGS, timestamp_options, its cache, UNKNOWN_MAC, ESTABLISHED, EXPECTED)"},
    {"take_predicted", (PyCFunction)(void (*)(void))take_predicted, METH_FASTCALL,
     "take_predicted(frames, i, conns, now, t0, touched) -> index of the first frame not taken"},
    {"ring_batch", (PyCFunction)(void (*)(void))ring_batch, METH_FASTCALL,
     "ring_batch(ring, head, frame_size, frame_nr, limit) -> (frames, head, truncated)"},
    {"epb_batch", (PyCFunction)(void (*)(void))epb_batch, METH_FASTCALL,
     "epb_batch(frames, ts_hi, ts_lo, tails, snaplen) -> (pcapng blocks, their size)"},
    {"ring_take", (PyCFunction)(void (*)(void))ring_take, METH_FASTCALL,
     "ring_take(ring, head, frame_size, frame_nr, limit, conns, now, t0, touched) -> (frames, head, truncated, taken)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_local_mac, "local_mac"); INTERN(s_vlan, "vlan"); INTERN(s_remote_mac, "remote_mac");
    INTERN(s_faults_in, "faults_in"); INTERN(s_core, "core"); INTERN(s_listener, "_listener");
    INTERN(s_trace, "_trace"); INTERN(s_last_msg, "_last_msg"); INTERN(s_pieces, "pieces");
    INTERN(s_segments_received, "segments_received"); INTERN(s_snd_wscale, "snd_wscale");
    INTERN(s_append, "append"); INTERN(inbound, "<"); INTERN(empty_str, "");
#undef INTERN
    PyObject *m = PyModule_Create(&module);
#ifndef TCPEMU_SOURCE_SHA256
#define TCPEMU_SOURCE_SHA256 ""
#endif
    /* the digest of the source it was built from (hatch_build.py): a stale build is refused */
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCE_SHA256", TCPEMU_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
