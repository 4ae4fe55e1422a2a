# Router: a trie of path segments. Mirrors fastgw/_py/router.py; keep the two in step.

cdef object _PARAM_NAME = _re.compile(r"[A-Za-z0-9_.-]+\Z")
cdef object _METHOD_TOKEN = _re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+\Z")
cdef tuple _NOT_FOUND = (2, None, None)
cdef str _ANY = "ANY"

cdef enum:
    SEG_LITERAL = 0
    SEG_PARAM = 1
    SEG_GREEDY = 2


def _parse_route(template):
    """Split a route template into (kind, text) segments; raise ValueError when malformed."""
    if not isinstance(template, str):
        raise TypeError(f"route template must be str, not {type(template).__name__}")
    if not template.startswith("/"):
        raise ValueError(f"route template must start with '/': {template!r}")
    body = template[1:]
    if len(body) > 1 and body.endswith("/"):  # one trailing slash is insignificant; "//" is not
        body = body[:-1]
    if not body:
        return []
    segments = []
    seen = set()
    raw = body.split("/")
    for i, seg in enumerate(raw):
        if not seg:
            raise ValueError(f"empty path segment in route template {template!r}")
        if "{" not in seg and "}" not in seg:
            segments.append((SEG_LITERAL, seg))
            continue
        if not (seg.startswith("{") and seg.endswith("}")):
            raise ValueError(f"a parameter must be a whole path segment in route template {template!r}")
        name = seg[1:-1]
        kind = SEG_PARAM
        if name.endswith("+"):
            kind = SEG_GREEDY
            name = name[:-1]
            if i != len(raw) - 1:
                raise ValueError(f"greedy parameter {seg} must be the last segment in {template!r}")
        if not _PARAM_NAME.match(name):
            raise ValueError(f"invalid parameter name {name!r} in route template {template!r}")
        if name in seen:
            raise ValueError(f"duplicate parameter name {name!r} in route template {template!r}")
        seen.add(name)
        segments.append((kind, _intern(name)))  # shared with Template names: identity lookups
    return segments


@cython.final
cdef class _Route:
    cdef str method
    cdef str template
    cdef object target
    cdef tuple names       # parameter names, greedy last
    cdef tuple positions   # segment index of each name, known from the template
    cdef bint greedy       # the last name is a {greedy+} parameter
    cdef _Node node

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef dict bind(self, str path, list segs, Py_ssize_t start, Py_ssize_t n):
        # Values are read at the positions the template fixes, so the trie walk records nothing.
        cdef dict params = {}
        cdef Py_ssize_t j, pos, k = PyTuple_GET_SIZE(self.names)
        cdef Py_ssize_t offset, end
        if self.greedy:
            k -= 1
        for j in range(k):
            pos = start + <Py_ssize_t>(<object>PyTuple_GET_ITEM(self.positions, j))
            params[<object>PyTuple_GET_ITEM(self.names, j)] = <object>PyList_GET_ITEM(segs, pos)
        if self.greedy:
            # The rest of the path is "/".join(segs[pos:n]): cut it out of path instead.
            pos = start + <Py_ssize_t>(<object>PyTuple_GET_ITEM(self.positions, k))
            offset = start
            for j in range(start, pos):
                offset += PyUnicode_GET_LENGTH(<object>PyList_GET_ITEM(segs, j)) + 1
            end = PyUnicode_GET_LENGTH(path)
            if n < PyList_GET_SIZE(segs):  # the insignificant trailing slash
                end -= 1
            params[<object>PyTuple_GET_ITEM(self.names, k)] = path[offset:end]
        return params


@cython.final
cdef class _Node:
    cdef dict literals     # segment text -> _Node
    cdef _Node param
    cdef _Node greedy      # always a leaf: a greedy parameter is the last segment
    cdef dict methods      # method -> _Route
    cdef tuple allowed_methods  # cache for 405 answers; None when stale

    def __cinit__(self):
        self.literals = {}
        self.methods = {}

    cdef inline _Route lookup(self, object method):
        cdef PyObject* route
        if not self.methods:
            return None
        if method is None:  # the 405 search: any route on this node will do
            for r in self.methods.values():
                return r
        route = PyDict_GetItemWithError(self.methods, method)
        if route is NULL:
            route = PyDict_GetItemWithError(self.methods, _ANY)
            if route is NULL:
                return None
        return <_Route>route

    cdef tuple allowed(self):
        if self.allowed_methods is None:
            self.allowed_methods = tuple(sorted([m for m in self.methods if m != _ANY]))
        return self.allowed_methods


@cython.boundscheck(False)
@cython.wraparound(False)
cdef _Route _find(_Node node, list segs, Py_ssize_t i, Py_ssize_t n, object method):
    cdef PyObject* child
    cdef _Route route
    cdef str seg
    if i == n:
        return node.lookup(method)
    seg = <str>PyList_GET_ITEM(segs, i)
    if node.literals:
        child = PyDict_GetItemWithError(node.literals, seg)
        if child is not NULL:
            route = _find(<_Node>child, segs, i + 1, n, method)
            if route is not None:
                return route
    # Empty segments only come from un-normalised paths; never bind them to a parameter.
    if node.param is not None and PyUnicode_GET_LENGTH(seg) > 0:
        route = _find(node.param, segs, i + 1, n, method)
        if route is not None:
            return route
    if node.greedy is not None and PyUnicode_GET_LENGTH(seg) > 0:
        return node.greedy.lookup(method)
    return None


@cython.final
@cython.binding(False)  # plain method descriptors: ~10 ns less per call
cdef class Router:
    """HTTP API style router. See docs/DESIGN.md for the interface."""

    cdef _Node _root
    cdef dict _static      # "/a/b" -> node, for routes without parameters: one dict lookup
    cdef list _routes
    cdef object _default
    cdef bint _has_default

    def __cinit__(self):
        self._root = _Node()
        self._static = {}
        self._routes = []
        self._has_default = False

    cpdef add(self, object method, object template, object target):
        cdef _Node node, child
        cdef _Route route, old
        if not isinstance(method, str) or not _METHOD_TOKEN.match(method):
            raise ValueError(
                f"invalid method {method!r}: expected an upper-case token such as 'GET', or 'ANY'")
        segments = _parse_route(template)
        node = self._root
        names = []
        positions = []
        greedy = False
        for pos, (kind, text) in enumerate(segments):
            if kind == SEG_LITERAL:
                child = node.literals.get(text)
                if child is None:
                    child = _Node()
                    node.literals[text] = child
            elif kind == SEG_PARAM:
                names.append(text)
                positions.append(pos)
                child = node.param
                if child is None:
                    child = node.param = _Node()
            else:
                names.append(text)
                positions.append(pos)
                greedy = True
                child = node.greedy
                if child is None:
                    child = node.greedy = _Node()
            node = child
        old = node.methods.get(method)
        if old is not None:
            raise ValueError(f"duplicate route {method} {template} (conflicts with {old.method} {old.template})")
        route = _Route.__new__(_Route)
        route.method = method
        route.template = template
        route.target = target
        route.names = tuple(names)
        route.positions = tuple(positions)
        route.greedy = greedy
        route.node = node
        node.methods[method] = route
        node.allowed_methods = None
        if not names:
            self._static["/" + "/".join([text for _, text in segments])] = node
        self._routes.append((method, template, target))

    cpdef set_default(self, object target):
        self._default = target
        self._has_default = True

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cpdef tuple match(self, object method, object path):
        cdef list segs
        cdef Py_ssize_t start = 0, n
        cdef PyObject* static
        cdef _Route route
        if not PyUnicode_Check(path) or not PyUnicode_Check(method):
            raise TypeError("method and path must be str")
        # A route without parameters is the most specific match there can be for its path.
        static = PyDict_GetItemWithError(self._static, path)
        if static is not NULL:
            route = (<_Node>static).lookup(method)
            if route is not None:
                return (0, route.target, {})
        segs = (<str>path).split("/")
        n = PyList_GET_SIZE(segs)
        if PyUnicode_GET_LENGTH(path) > 0 and PyUnicode_READ_CHAR(path, 0) == u"/":
            start = 1
        if n > start and PyUnicode_GET_LENGTH(<object>PyList_GET_ITEM(segs, n - 1)) == 0:
            n -= 1
        route = _find(self._root, segs, start, n, method)
        if route is not None:
            return (0, route.target, route.bind(<str>path, segs, start, n))
        if self._has_default:
            return (0, self._default, {})
        route = _find(self._root, segs, start, n, None)
        if route is not None:
            return (1, route.node.allowed(), None)
        return _NOT_FOUND

    cpdef list routes(self):
        return list(self._routes)

    def __len__(self):
        return len(self._routes)
