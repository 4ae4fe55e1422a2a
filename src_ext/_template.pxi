# Template: URI templates and simple substitution. Mirrors fastgw/_py/template.py.

cdef extern from "Python.h":
    Py_UCS4 PyUnicode_MAX_CHAR_VALUE(object o)

cdef object _PLACEHOLDER_NAME = _re.compile(r"[A-Za-z0-9_.-]+\Z")

cdef enum:
    FAST_RENDER_MAX = 32   # placeholders rendered without a temporary list


def _parse_template(source):
    """Split source into literal strs and (name, raw) tuples; ValueError (1-based column) when malformed."""
    if not isinstance(source, str):
        raise TypeError(f"template must be str, not {type(source).__name__}")
    parts = []
    lit_start = 0
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "}":
            raise ValueError(f"unbalanced '}}' at column {i + 1} in template {source!r}")
        if ch != "{":
            i += 1
            continue
        dollar = i > lit_start and source[i - 1] == "$"
        start = i - 1 if dollar else i
        close = i + 1
        while close < n and source[close] not in "{}":
            close += 1
        if close == n or source[close] == "{":
            raise ValueError(f"unbalanced '{{' at column {i + 1} in template {source!r}")
        name = source[i + 1 : close]
        if not dollar and name.endswith("+"):
            name = name[:-1]
        if not _PLACEHOLDER_NAME.match(name):
            raise ValueError(f"invalid placeholder name {name!r} at column {i + 1} in template {source!r}")
        if start > lit_start:
            parts.append(source[lit_start:start])
        # Interned, like the router's parameter names: the params dict of a match then holds the
        # very same key objects, and dict lookups succeed on identity.
        parts.append((_intern(name), source[start : close + 1]))
        i = lit_start = close + 1
    if lit_start < n:
        parts.append(source[lit_start:])
    return parts


cdef inline Py_ssize_t _copy_into(str result, char* data, unsigned int kind, Py_ssize_t pos,
                                  PyObject* piece) except -1:
    """Copy piece (a borrowed str) into result at pos; return the position after it."""
    cdef Py_ssize_t size = PyUnicode_GET_LENGTH(<object>piece)
    if size == 0:
        return pos
    if PyUnicode_KIND(<object>piece) == kind:  # same width: a plain copy
        memcpy(data + pos * kind, PyUnicode_DATA(<object>piece), size * kind)
    else:  # narrower text widened into the result
        PyUnicode_CopyCharacters(result, pos, <object>piece, 0, size)
    return pos + size


@cython.final
@cython.binding(False)  # plain method descriptors: ~10 ns less per call
cdef class Template:
    """A parsed template; see docs/DESIGN.md."""

    # Flattened so that render() is a tight loop: lits[0] keys[0] lits[1] ... keys[n-1] lits[n].
    cdef tuple _lits       # n + 1 literal strs, possibly empty
    cdef tuple _keys       # n placeholder names (repeats allowed)
    cdef tuple _raws       # n placeholder source texts, for source/repr
    cdef Py_ssize_t _lits_length   # total length of the literals
    cdef Py_UCS4 _lits_maxchar     # widest character class among them
    cdef readonly tuple names

    def __init__(self, source):
        self._set_parts(_parse_template(source))

    cdef _set_parts(self, list parts):
        lits = [""]
        keys = []
        raws = []
        for part in parts:
            if isinstance(part, str):
                lits[-1] += part
            else:
                keys.append(part[0])
                raws.append(part[1])
                lits.append("")
        self._lits = tuple(lits)
        self._lits_length = sum([len(lit) for lit in lits])
        self._lits_maxchar = max([PyUnicode_MAX_CHAR_VALUE(lit) for lit in lits])
        self._keys = tuple(keys)
        self._raws = tuple(raws)
        self.names = tuple(dict.fromkeys(keys))

    cdef list _parts(self):
        cdef Py_ssize_t i
        parts = [self._lits[0]]
        for i in range(len(self._keys)):
            parts.append((self._keys[i], self._raws[i]))
            parts.append(self._lits[i + 1])
        return parts

    cpdef Template partial(self, object values):
        cdef Template t
        parts = []
        for part in self._parts():
            if not isinstance(part, str) and part[0] in values:
                value = values[part[0]]
                parts.append(value if isinstance(value, str) else str(value))
            else:
                parts.append(part)
        t = Template.__new__(Template)
        t._set_parts(parts)
        return t

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cpdef str render(self, object values):
        # Common case, a dict of str values: size the result once and copy every piece into it,
        # with no temporary list and no join. Anything else takes _render_any.
        cdef Py_ssize_t i, n = PyTuple_GET_SIZE(self._keys), gathered = 0, total, pos
        cdef PyObject* vals[FAST_RENDER_MAX]
        cdef PyObject* found
        cdef Py_UCS4 maxchar, mc
        cdef bint all_str = True
        cdef unsigned int kind
        cdef char* data
        cdef str result
        if n == 0:
            return <str>PyTuple_GET_ITEM(self._lits, 0)
        if n > FAST_RENDER_MAX or not PyDict_CheckExact(values):
            return self._render_any(values)
        total = self._lits_length
        maxchar = self._lits_maxchar
        try:
            for i in range(n):
                key = <object>PyTuple_GET_ITEM(self._keys, i)
                found = PyDict_GetItemWithError(values, key)
                if found is NULL:
                    raise KeyError(key)
                # Owned, not borrowed: a lookup may run a foreign key's __eq__, which could
                # drop an earlier value from the dict.
                Py_XINCREF(found)
                vals[i] = found
                gathered += 1
                if not PyUnicode_CheckExact(<object>found):
                    all_str = False
                    break
                total += PyUnicode_GET_LENGTH(<object>found)
                mc = PyUnicode_MAX_CHAR_VALUE(<object>found)
                if mc > maxchar:
                    maxchar = mc
            if not all_str:
                return self._render_any(values)
            result = PyUnicode_New(total, maxchar)
            kind = PyUnicode_KIND(result)
            data = <char*>PyUnicode_DATA(result)
            pos = _copy_into(result, data, kind, 0, PyTuple_GET_ITEM(self._lits, 0))
            for i in range(n):
                pos = _copy_into(result, data, kind, pos, vals[i])
                pos = _copy_into(result, data, kind, pos, PyTuple_GET_ITEM(self._lits, i + 1))
            return result
        finally:
            for i in range(gathered):
                Py_XDECREF(vals[i])

    cdef str _render_any(self, object values):
        cdef Py_ssize_t i, n = PyTuple_GET_SIZE(self._keys)
        cdef list out = [<object>PyTuple_GET_ITEM(self._lits, 0)]
        for i in range(n):
            key = <object>PyTuple_GET_ITEM(self._keys, i)
            try:
                value = values[key]
            except KeyError:
                raise KeyError(key) from None
            out.append(value if PyUnicode_Check(value) else str(value))
            out.append(<object>PyTuple_GET_ITEM(self._lits, i + 1))
        return "".join(out)

    @property
    def source(self):
        cdef Py_ssize_t i
        out = [self._lits[0]]
        for i in range(len(self._keys)):
            out.append(self._raws[i])
            out.append(self._lits[i + 1])
        return "".join(out)

    def __repr__(self):
        return f"Template({self.source!r})"
