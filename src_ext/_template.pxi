# Template: URI templates and simple substitution. Mirrors fastgw/_py/template.py.

cdef object _PLACEHOLDER_NAME = _re.compile(r"[A-Za-z0-9_.-]+\Z")


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
        parts.append((name, source[start : close + 1]))
        i = lit_start = close + 1
    if lit_start < n:
        parts.append(source[lit_start:])
    return parts


@cython.final
cdef class Template:
    """A parsed template; see docs/DESIGN.md."""

    # Flattened so that render() is a tight loop: lits[0] keys[0] lits[1] ... keys[n-1] lits[n].
    cdef tuple _lits       # n + 1 literal strs, possibly empty
    cdef tuple _keys       # n placeholder names (repeats allowed)
    cdef tuple _raws       # n placeholder source texts, for source/repr
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
        cdef Py_ssize_t i, n = PyTuple_GET_SIZE(self._keys)
        cdef PyObject* found
        cdef bint exact = PyDict_CheckExact(values)
        cdef list out
        if n == 0:
            return <str>PyTuple_GET_ITEM(self._lits, 0)
        out = [<object>PyTuple_GET_ITEM(self._lits, 0)]
        for i in range(n):
            key = <object>PyTuple_GET_ITEM(self._keys, i)
            if exact:
                found = PyDict_GetItemWithError(values, key)
                if found is NULL:
                    raise KeyError(key)
                value = <object>found
            else:
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
