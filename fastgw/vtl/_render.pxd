# Cython declarations that turn render.py's classes into extension types when setup.py builds it as
# fastgw.vtl._render (an "augmenting" .pxd: Cython finds it by the module's name). render.py itself
# stays plain Python; this file is read by Cython only.
cimport cython

cpdef str to_str(object v)
cpdef bint is_true(object v)
cpdef bint java_equals(object a, object b)
cdef bint _is_num(object v)
cdef object _dget(dict d, object k)
cdef object _restore(dict ctx, object name, object v)
cdef object _iter_items(object v)
cpdef object method_table(object obj)
cpdef object call_method(object obj, str name, list args, object table)
cpdef object get_property(object obj, str name)
cdef object _java_class(object v)


cdef class Expr:
    cpdef value(self, dict ctx)

cdef class Const(Expr):
    cdef public object v
    cpdef value(self, dict ctx)

cdef class Interp(Expr):
    cdef public list nodes
    @cython.locals(out=list)
    cpdef value(self, dict ctx)

cdef class ListLit(Expr):
    cdef public list items
    @cython.locals(e=Expr)
    cpdef value(self, dict ctx)

cdef class MapLit(Expr):
    cdef public list keys
    cdef public list vals
    @cython.locals(k=Expr, v=Expr, m=dict, i=Py_ssize_t)
    cpdef value(self, dict ctx)

cdef class Range(Expr):
    cdef public Expr lo
    cdef public Expr hi
    cpdef value(self, dict ctx)

cdef class Not(Expr):
    cdef public Expr a
    cpdef value(self, dict ctx)

cdef class And(Expr):
    cdef public Expr a
    cdef public Expr b
    cpdef value(self, dict ctx)

cdef class Or(Expr):
    cdef public Expr a
    cdef public Expr b
    cpdef value(self, dict ctx)

cdef class Cmp(Expr):
    cdef public int op
    cdef public Expr a
    cdef public Expr b
    cpdef value(self, dict ctx)

cdef class Arith(Expr):
    cdef public int op
    cdef public Expr a
    cdef public Expr b
    cdef public str lit_a
    cdef public str lit_b
    cpdef value(self, dict ctx)


cdef class Step:
    cpdef apply(self, object obj, dict ctx)

cdef class Prop(Step):
    cdef public str name
    cpdef apply(self, object obj, dict ctx)

cdef class Call(Step):
    cdef public str name
    cdef public list args
    cdef public int input_method
    cdef public object f_str
    cdef public object f_map
    cdef public object f_list
    cdef public object cached_type
    cdef public object cached_func
    @cython.locals(a=Expr, args=list, inp=Input, n=Py_ssize_t)
    cpdef apply(self, object obj, dict ctx)

cdef class Index(Step):
    cdef public Expr key
    cpdef apply(self, object obj, dict ctx)

cdef class ForeachScope
cdef class Input


cdef class Ref(Expr):
    cdef public str name
    cdef public list steps
    cdef public int loop_var
    cdef public int scope_prop
    cdef public list prop_names
    @cython.locals(s=Step, p=Prop, scope=ForeachScope, prop=int, found=object, names=list, name=str)
    cpdef value(self, dict ctx)
    @cython.locals(i=Py_ssize_t, n=Py_ssize_t, last=Step)
    cpdef assign(self, dict ctx, object v)


cdef class Node:
    cpdef render(self, dict ctx, list out)

cpdef list block_of(object nodes)
@cython.locals(n=object, node=Node)
cdef object render_block(list block, dict ctx, list out)

cdef class Text(Node):
    cdef public str s
    cpdef render(self, dict ctx, list out)

cdef class RefOut(Node):
    cdef public Expr ref
    cpdef render(self, dict ctx, list out)

cdef class EscapedRef(Node):
    cdef public Expr ref
    cdef public str prefix
    cdef public str literal
    cpdef render(self, dict ctx, list out)

cdef class SetNode(Node):
    cdef public Ref target
    cdef public Expr expr
    cpdef render(self, dict ctx, list out)

cdef class If(Node):
    cdef public list conds
    cdef public list blocks
    cdef public list else_block
    @cython.locals(c=Expr, i=Py_ssize_t)
    cpdef render(self, dict ctx, list out)

cdef class ForeachScope:
    cdef public object parent
    cdef public Py_ssize_t index
    cdef public Py_ssize_t count
    cdef public bint hasNext
    cdef public bint first
    cdef public bint last

cdef class Foreach(Node):
    cdef public str var
    cdef public Expr expr
    cdef public list block
    @cython.locals(scope=ForeachScope, items=object, n=Py_ssize_t, limit=Py_ssize_t, i=Py_ssize_t,
                   has_next=bint, block=list)
    cpdef render(self, dict ctx, list out)

cdef class Break(Node):
    cpdef render(self, dict ctx, list out)

cdef class Stop(Node):
    cpdef render(self, dict ctx, list out)

cdef class DefinedBlock:
    cdef public list block
    cdef public dict ctx

cdef class Define(Node):
    cdef public str name
    cdef public list block
    cpdef render(self, dict ctx, list out)

cdef class Macro:
    cdef public str name
    cdef public list params
    cdef public list block

cdef class MacroCall(Node):
    cdef public str name
    cdef public list args
    cdef public dict macros
    cdef public str literal
    @cython.locals(m=Macro, a=Expr, i=Py_ssize_t, params=list, vals=list, saved=list)
    cpdef render(self, dict ctx, list out)

cdef class Template:
    cdef public list nodes
    cdef public str source
    @cython.locals(ctx=dict, out=list)
    cpdef str render(self, object variables)

@cython.locals(scope=ForeachScope)
cpdef object foreach_property(object scope, str name)


cdef class Input:
    cdef public str body
    cdef dict _path
    cdef dict _querystring
    cdef dict _header
    cdef object _root
    cdef object _params
    cdef object _lower
    cdef object _doc(self)
    cpdef path(self, object path)
    cpdef params(self, object name=*)
