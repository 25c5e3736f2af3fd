"""Find background entry points and follow calls from them to Flask context
accesses.

Each function body is walked once into a :class:`Summary` (the context names
it touches, the project functions it calls, whether it pushes a context).
Entry points found during those walks are then followed breadth first over
the summaries, so the chain reported for an access is the shortest one.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field

from . import _rules
from ._model import AssignBinding
from ._model import body_of
from ._model import ClassInfo
from ._model import Ext
from ._model import FixedBinding
from ._model import FunctionInfo
from ._model import FunctionNode
from ._model import ImportBinding
from ._model import Inst
from ._model import lambda_function
from ._model import ModuleInfo
from ._model import Project
from ._model import Scope
from ._model import specialize
from ._model import Super
from ._model import TRY_NODES
from ._model import Value
from ._names import APP_HELPERS
from ._names import APP_METHOD_NAMES
from ._names import APP_METHODS
from ._names import APP_VARS
from ._names import CELERY
from ._names import COPY_CONTEXT
from ._names import COPY_CONTEXT_VARS
from ._names import LOOP_FACTORIES
from ._names import PARTIAL
from ._names import POOL_CLASSES
from ._names import POOL_METHODS
from ._names import PROCESS_POOLS
from ._names import PROPAGATED_POOLS
from ._names import PROPAGATING
from ._names import PROTECTED_TOPS
from ._names import REQUEST_HELPERS
from ._names import REQUEST_VARS
from ._names import SAFE_SUBMIT_PREFIXES
from ._names import SPAWN_FUNCS
from ._names import TASK_FUNCS
from ._names import THREAD_LIKE
from ._names import TO_THREAD

_PROXIES = REQUEST_VARS | APP_VARS
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
# Methods that wait for a thread or a task to finish.
_WAITS = frozenset({"join", "result", "get", "wait"})
_JUMPS = (ast.Return, ast.Raise, ast.Break, ast.Continue)
# Decorators making a method a getter run by reading the attribute.
_PROPERTIES = frozenset({"property", "cached_property"})
_METHOD_SPAWNS = frozenset(
    {"submit", "run_in_executor", "start_background_task", "create_task", *POOL_METHODS}
)


@dataclass
class Access:
    """A read of a context proxy, or a call of a context-needing helper."""

    line: int
    col: int
    name: str
    # "request", "app", "helper_request", "helper_app" or "method_app" (a
    # library method needing an app context, such as Flask-Mail's send).
    category: str
    files: bool
    app: bool
    req: bool
    # Parameters the access is guarded by (``if emit_flash: flash(...)``).
    guards: frozenset[str] = frozenset()
    # The canonical name read, such as ``flask.request``.
    proxy: str = ""


@dataclass
class Edge:
    """A call from one project function to another."""

    func: FunctionInfo
    app: bool
    req: bool
    guards: frozenset[str] = frozenset()
    # Parameters of ``func`` given a constant false value at this call.
    falsy: frozenset[str] = frozenset()
    # The caller takes only ``*args, **kwargs`` and passes them on, as a
    # decorator's wrapper does: what it was given, ``func`` is given.
    forward: bool = False


@dataclass
class Summary:
    accesses: list[Access] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


@dataclass(frozen=True)
class Known:
    """What holds where a condition was found true (or false)."""

    #: ``has_app_context()`` was true.
    app: bool = False
    #: ``has_request_context()`` was true.
    req: bool = False
    #: Parameters that were true.
    params: frozenset[str] = frozenset()

    def __or__(self, other: Known) -> Known:
        """Both hold."""
        return Known(
            self.app or other.app, self.req or other.req, self.params | other.params
        )

    def __and__(self, other: Known) -> Known:
        """One of them holds, but which is not known."""
        return Known(
            self.app and other.app,
            self.req and other.req,
            self.params & other.params,
        )


@dataclass
class Entry:
    """A function the project runs in the background."""

    func: FunctionInfo
    kind: str
    spawner: str | None
    app: bool = False
    req: bool = False
    # Parameters of ``func`` given a constant false value where it is
    # started (see Edge.falsy).
    falsy: frozenset[str] = frozenset()


class TooDeepError(Exception):
    """A module is nested too deeply for the checker's recursive walks.

    :param module: The module being analysed when the recursion limit was
        reached.
    """

    def __init__(self, module: ModuleInfo) -> None:
        super().__init__(module.path)
        self.module = module


@contextmanager
def _analysing(module: ModuleInfo) -> Iterator[None]:
    """Turn a :exc:`RecursionError` into a :exc:`TooDeepError` naming
    ``module``, so that the file can be left out.
    """
    try:
        yield
    except RecursionError:
        raise TooDeepError(module) from None


@dataclass(frozen=True)
class RawFinding:
    module: ModuleInfo
    line: int
    col: int
    code: str
    message: str
    via: tuple[str, ...]


def dotted(expr: ast.expr) -> str:
    """Source-like text for a name, attribute chain or call."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return f"{dotted(expr.value)}.{expr.attr}"
    if isinstance(expr, ast.Call):
        return f"{dotted(expr.func)}(...)"
    return "<expr>"


def _last_identifier(expr: ast.expr) -> str:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Call):
        return _last_identifier(expr.func)
    return ""


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, (ast.Attribute, ast.Call, ast.Subscript)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def context_kind(expr: ast.expr) -> tuple[bool, bool]:
    """Whether ``with expr:`` pushes an app context, and a request context.

    Any ``x.app_context()`` counts: which app it is does not matter.
    """
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        attr = expr.func.attr
        if attr == "app_context":
            return True, False
        if attr in ("test_request_context", "request_context"):
            return True, True
    return False, False


def _is_falsy(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and not expr.value


def parameters(func: FunctionInfo) -> list[str]:
    """Positional parameter names, without ``self``/``cls`` of methods."""
    args = func.node.args
    names = [a.arg for a in [*args.posonlyargs, *args.args]]
    if func.cls is not None and names:
        static = any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorators
        )
        if not static:
            names.pop(0)
    return names


def _names_task(expr: ast.expr, scope: Scope | None, depth: int = 0) -> bool:
    """Whether ``expr`` is spelled as Celery's task class (its last name
    contains "Task"), directly or through names assigned such a value in
    ``scope`` and the scopes around it (``task_base = celery_app.Task``).
    """
    if "Task" in _last_identifier(expr):
        return True
    if not isinstance(expr, ast.Name) or depth > 8:
        return False
    while scope is not None:
        bindings = scope.bindings.get(expr.id)
        if bindings is not None:
            return any(
                isinstance(b, AssignBinding)
                and _names_task(b.value, b.scope, depth + 1)
                for b in bindings
            )
        scope = scope.parent
    return False


def _catches_runtime_error(handler: ast.ExceptHandler) -> bool:
    kind = handler.type
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(_last_identifier(n) == "RuntimeError" for n in names if n is not None)


_SPAWN_WORDS = frozenset(
    {
        "target",
        "copy_current_request_context",
        "create_task",
        "ensure_future",
        "run_in_executor",
        "start_background_task",
        "submit",
        "start_new_thread",
        *(name.rpartition(".")[2] for name in [*THREAD_LIKE, *SPAWN_FUNCS]),
        *POOL_METHODS,
    }
)


_SPAWN_CALLABLES = frozenset(
    {*THREAD_LIKE, *SPAWN_FUNCS, *POOL_CLASSES, *TASK_FUNCS, COPY_CONTEXT}
)


def _spawn_pattern(
    project: Project, module: ModuleInfo, classes: Iterable[str]
) -> re.Pattern[str]:
    """A regex matching source that may start background work: the words
    above, every name the module imports from the modules involved, and its
    global aliases of their constructors (``Later = threading.Timer``,
    ``from .compat import Spawn``) and of the project's thread classes.

    :param classes: Names of the project's thread classes.
    """
    words = {*_SPAWN_WORDS, *classes}
    for name, bindings in module.scope.bindings.items():
        for b in bindings:
            if isinstance(b, ImportBinding):
                if b.module.partition(".")[0] in PROTECTED_TOPS:
                    words.add(name)
                    break
                if b.level == 0 and project.find_module(b.module, module) is None:
                    # Another library: it cannot be an alias of ours.
                    continue
            elif not (
                isinstance(b, AssignBinding)
                and isinstance(b.value, (ast.Name, ast.Attribute, ast.Call))
            ):
                continue
            value = project.resolve_bindings([b], module.scope)
            if (
                isinstance(value, Ext)
                and not value.instance
                and value.name in _SPAWN_CALLABLES
            ) or (isinstance(value, ClassInfo) and project.thread_base(value)):
                words.add(name)
                break
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, words))) + r")\b")


def _is_proxy(value: Value) -> bool:
    return isinstance(value, Ext) and not value.instance and value.name in _PROXIES


def _is_carry(name: str) -> bool:
    return name == "carry" or name.endswith(".carry")


class Analyzer:
    """Run every rule over a parsed :class:`Project`."""

    def __init__(self, project: Project, max_depth: int = 20) -> None:
        self.project = project
        self.max_depth = max_depth
        self.entries: list[Entry] = []
        self.findings: list[RawFinding] = []
        # (module, line, col, copied function): OFF113 candidates.
        self.copy_sites: list[tuple[ModuleInfo, int, int, FunctionInfo]] = []
        self._summaries: dict[int, Summary] = {}
        self._decorators: dict[int, frozenset[str]] = {}
        self._wrapped: dict[int, FunctionInfo] = {}
        # Copies of decorators' wrappers made by decorated().
        self.wrappers: list[FunctionInfo] = []

    # -- helpers used by walkers -------------------------------------------

    def decorator_kinds(self, func: FunctionInfo) -> frozenset[str]:
        """``copy``, ``carry`` and ``task`` for decorators that make a
        function safe to run in the background (or not a plain function),
        ``celery`` for a Celery task: not a plain function either, but run
        by a worker, so its body is an entry point.
        """
        key = id(func)
        cached = self._decorators.get(key)
        if cached is not None:
            return cached
        kinds = set()
        scope = func.scope.parent or func.module.scope
        for dec in func.decorators:
            expr = dec.func if isinstance(dec, ast.Call) else dec
            value = self.project.resolve(expr, scope)
            name = value.name if isinstance(value, Ext) else _last_identifier(expr)
            if name == COPY_CONTEXT:
                kinds.add("copy")
            elif _is_carry(name):
                kinds.add("carry")
            elif _last_identifier(expr) in ("task", "shared_task"):
                kinds.add("celery" if self.celery_task(expr, value, scope) else "task")
        result = frozenset(kinds)
        self._decorators[key] = result
        return result

    def celery_task(self, expr: ast.expr, value: Value, scope: Scope) -> bool:
        """Whether the decorator ``expr`` (resolved to ``value``) is Celery's
        ``shared_task`` or the ``task`` method of a Celery app: an instance
        of ``Celery`` or of a project subclass, also when a project factory
        (``make_celery(app)``) returns it. A receiver the checker cannot
        resolve is taken to be a Celery app if its name, or its key in
        ``app.extensions``, contains ``celery``; ``@offload.task`` and
        other libraries' tasks are not.
        """
        if isinstance(value, Ext) and value.name.startswith("celery."):
            return True
        if not isinstance(expr, ast.Attribute):
            # A bare ``shared_task`` is Celery's unless known to be another.
            return value is None and _last_identifier(expr) == "shared_task"
        receiver = self.project.resolve(expr.value, scope)
        if isinstance(receiver, Ext) and receiver.instance:
            return receiver.name == CELERY
        if isinstance(receiver, Inst):
            return self.project.celery_base(receiver.cls)
        if receiver is not None and not isinstance(receiver, Ext):
            return False
        # Unknown, or a name from a module outside the project.
        key = _extension_key(expr.value)
        name = key if key is not None else _last_identifier(expr.value)
        return "celery" in name.lower()

    def task_class(self, cls: ClassInfo, _seen: set[int] | None = None) -> bool:
        """Whether ``cls`` looks like a subclass of Celery's ``Task``: a base
        named like one (``Task``, ``celery.Task``), a name bound to such a
        value (``task_base = celery_app.Task``, as Superset does), or a
        project class that is one itself.
        """
        seen = set() if _seen is None else _seen
        if id(cls) in seen:
            return False
        seen.add(id(cls))
        for base in cls.node.bases:
            value = self.project.resolve(base, cls.scope)
            # A class of the project: by what it subclasses, not its name
            # (not itself: ``class AppTask(self.Task)`` with ``self.Task =
            # AppTask`` set later resolves to the class being defined).
            if isinstance(value, ClassInfo) and value is not cls:
                if self.task_class(value, seen):
                    return True
            elif _names_task(base, cls.scope):
                return True
        return False

    def celery_app_context(self) -> bool:
        """Whether the project's Celery tasks run in an app context: a
        ``Task`` subclass whose ``__call__`` pushes one, as in Flask's
        Celery guide (``with app.app_context(): return self.run(...)``), or
        enters it on an ``ExitStack`` or pushes it.
        """
        for cls in self.project.classes:
            call = cls.methods.get("__call__")
            if call is None or isinstance(call.node, ast.Lambda):
                continue
            if not self.task_class(cls):
                continue
            for node in ast.walk(call.node):
                if isinstance(node, (ast.With, ast.AsyncWith)) and any(
                    context_kind(item.context_expr)[0] for item in node.items
                ):
                    return True
                # ``stack.enter_context(app.app_context())`` (an ExitStack)
                # or ``app.app_context().push()``.
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    attr = node.func.attr
                    if attr == "enter_context" and node.args:
                        if context_kind(node.args[0])[0]:
                            return True
                    elif attr == "push" and context_kind(node.func.value)[0]:
                        return True
        return False

    def celery_request_flags(self) -> set[str]:
        """Task options under which the project's ``Task`` subclass pushes a
        request context, as Indico's does for ``@celery.task(request_context=
        True)``: ``if getattr(self, "request_context", False):`` (or ``if
        self.request_context:``) around ``app.test_request_context()``.
        """
        flags: set[str] = set()
        for cls in self.project.classes:
            call = cls.methods.get("__call__")
            if call is None or isinstance(call.node, ast.Lambda):
                continue
            if not self.task_class(cls):
                continue
            for node in ast.walk(call.node):
                if not isinstance(node, ast.If):
                    continue
                test = node.test
                name: str | None = None
                if (
                    isinstance(test, ast.Call)
                    and isinstance(test.func, ast.Name)
                    and test.func.id == "getattr"
                    and len(test.args) >= 2
                    and isinstance(test.args[1], ast.Constant)
                    and isinstance(test.args[1].value, str)
                ):
                    name = test.args[1].value
                elif isinstance(test, ast.Attribute):
                    name = test.attr
                if name is not None and any(
                    isinstance(sub, ast.Call) and context_kind(sub)[1]
                    for stmt in node.body
                    for sub in ast.walk(stmt)
                ):
                    flags.add(name)
        return flags

    def is_safe(self, func: FunctionInfo) -> bool:
        return bool(self.decorator_kinds(func))

    def decorated(self, func: FunctionInfo) -> FunctionInfo:
        """What calling ``func`` runs.

        A function decorated with the project's own decorators, whose
        wrapper calls the function it wraps (or hands it to a thread), runs
        that wrapper: it is returned with the decorator's parameter bound to
        the next decorator's wrapper, and the last one to the function's own
        body. Other decorators are taken to return the function unchanged.
        """
        if not func.decorators or func.body_of is not None:
            return func
        key = id(func)
        found = self._wrapped.get(key)
        if found is not None:
            return found
        self._wrapped[key] = func
        inner: FunctionInfo | None = None
        scope = func.scope.parent or func.module.scope
        for dec in reversed(func.decorators):
            wrapped = self.wrapper(dec, scope)
            if wrapped is None:
                continue
            decorator, wrapper, param = wrapped
            if inner is None:
                inner = body_of(func)
            inner = specialize(wrapper, decorator, param, inner)
            self.wrappers.append(inner)
        result = inner if inner is not None else func
        self._wrapped[key] = result
        return result

    def wrapper(
        self, dec: ast.expr, scope: Scope
    ) -> tuple[FunctionInfo, FunctionInfo, str] | None:
        """For a project decorator (or decorator factory) whose returned
        wrapper calls the decorated function: the decorator, the wrapper,
        and the decorator's parameter naming the decorated function.
        """
        factory = isinstance(dec, ast.Call)
        expr = dec.func if isinstance(dec, ast.Call) else dec
        if not isinstance(expr, (ast.Name, ast.Attribute)):
            return None
        decorator = self.project.resolve(expr, scope)
        if factory and isinstance(decorator, FunctionInfo):
            decorator = _returned_function(self.project, decorator)
        if not isinstance(decorator, FunctionInfo) or decorator.cls is not None:
            return None
        node = decorator.node
        if isinstance(node, ast.Lambda):
            return None
        params = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
        if len(params) != 1:
            return None
        wrapper = _returned_function(self.project, decorator)
        if wrapper is None or not _uses_as_callable(wrapper.node, params[0]):
            return None
        return decorator, wrapper, params[0]

    def summary(self, func: FunctionInfo) -> Summary:
        key = id(func.body_of or func)
        found = self._summaries.get(key)
        if found is not None:
            return found
        walker = _Walker(
            self, func.scope, func, import_time=False, spawner=func.qualname
        )
        # Store first: recursion through the same function ends here.
        self._summaries[key] = walker.summary
        node = func.node
        with _analysing(func.module):
            if isinstance(node, ast.Lambda):
                walker.expr(node.body)
            else:
                walker.stmts(node.body)
        return walker.summary

    def thread_init(self, func: FunctionInfo) -> bool:
        """Whether ``func`` is the ``__init__`` of a ``Thread`` subclass, which
        can give the base class a target without naming it, as in
        ``super().__init__(None, self.job)``.
        """
        node = func.node
        if func.cls is None or isinstance(node, ast.Lambda) or node.name != "__init__":
            return False
        with _analysing(func.module):
            return self.project.thread_base(func.cls) is not None

    def add(
        self,
        module: ModuleInfo,
        node: ast.expr | ast.stmt,
        code: str,
        message: str,
        via: tuple[str, ...] = (),
    ) -> None:
        self.findings.append(
            RawFinding(module, node.lineno, node.col_offset + 1, code, message, via)
        )

    # -- driver ------------------------------------------------------------

    def run(self) -> list[RawFinding]:
        """Analyse the project and return what was found.

        :raises TooDeepError: A module is nested too deeply to analyse; the
            analysis must be run again without it.
        """
        project = self.project
        # The project's subclasses of Thread (or Timer, Process): calling one
        # by its name may start a thread.
        threads: list[tuple[ClassInfo, str]] = []
        for cls in project.classes:
            with _analysing(cls.module):
                base = project.thread_base(cls)
            if base is not None:
                threads.append((cls, base))
        words = {cls.node.name for cls, _ in threads}
        patterns: dict[int, re.Pattern[str]] = {}
        for module in project.modules:
            walker = _Walker(
                self, module.scope, None, import_time=True, spawner=module.name
            )
            with _analysing(module):
                walker.stmts(module.tree.body)
                patterns[id(module)] = _spawn_pattern(project, module, words)
        # Only bodies that may start background work are walked now; the
        # rest are walked when a call chain reaches them.
        spawning: set[int] = set()
        for func in list(project.functions):
            node = func.node
            text = "\n".join(
                func.module.lines[node.lineno - 1 : node.end_lineno or node.lineno]
            )
            if self.thread_init(func) or patterns[id(func.module)].search(text):
                spawning.add(id(node))
                self.summary(func)
        # A decorator's wrapper that starts the function it wraps in the
        # background, walked once for each function decorated with it.
        # Celery tasks run in a worker, whoever calls them (or none).
        celery_app = self.celery_app_context()
        flags = self.celery_request_flags()
        for func in list(project.functions):
            if func.decorators:
                with _analysing(func.module):
                    called = self.decorated(func)
                    if "celery" in self.decorator_kinds(func):
                        req = bool(flags) and _task_options(func) & flags
                        entry = Entry(called, "celery", None, celery_app, bool(req))
                        self.entries.append(entry)
        for wrapper in list(self.wrappers):
            if id(wrapper.node) in spawning:
                self.summary(wrapper)
        for cls, base in threads:
            run = cls.methods.get("run")
            if run is not None:
                self.entries.append(Entry(run, THREAD_LIKE[base][0], None))
        best: dict[tuple[str, int, int, str], RawFinding] = {}
        for entry in self.entries:
            for finding in self.follow(entry):
                key = (finding.module.path, finding.line, finding.col, finding.code)
                old = best.get(key)
                if old is None or (len(finding.via), finding.via) < (
                    len(old.via),
                    old.via,
                ):
                    best[key] = finding
        for module, line, col, func in self.copy_sites:
            found = self.find_files_read(func)
            if found is not None:
                self.findings.append(
                    RawFinding(
                        module,
                        line,
                        col,
                        "OFF113",
                        _rules.reads_files(func.qualname),
                        found,
                    )
                )
        return [*best.values(), *self.findings]

    def follow(self, entry: Entry) -> list[RawFinding]:
        """Breadth first from an entry point, reporting each access."""
        out: list[RawFinding] = []
        prefix = (entry.spawner,) if entry.spawner else ()
        start = entry.func
        via0: tuple[str, ...] = (start.qualname,)
        falsy0 = entry.falsy
        queue = deque([(start, entry.app, entry.req, falsy0, via0)])
        seen = {(id(start), entry.app, entry.req, falsy0)}
        while queue:
            func, app, req, falsy, via = queue.popleft()
            summary = self.summary(func)
            for access in summary.accesses:
                if access.guards & falsy:
                    continue
                found = self.check_access(
                    entry, func, access, app or access.app, req or access.req
                )
                if found is not None:
                    code, message = found
                    line, col = func.report_at or (access.line, access.col)
                    out.append(
                        RawFinding(func.module, line, col, code, message, prefix + via)
                    )
            if len(via) >= self.max_depth:
                continue
            for edge in summary.edges:
                if edge.guards & falsy:
                    continue
                given = edge.falsy | falsy if edge.forward else edge.falsy
                state = (id(edge.func), app or edge.app, req or edge.req, given)
                if state not in seen:
                    seen.add(state)
                    step = via + (edge.func.qualname,)
                    queue.append((edge.func, state[1], state[2], given, step))
        return out

    def check_access(
        self, entry: Entry, func: FunctionInfo, access: Access, app: bool, req: bool
    ) -> tuple[str, str] | None:
        if req:
            return None
        category = access.category
        if category == "request":
            return "OFF101", _rules.request_read(
                access.name, entry.kind, app, access.proxy
            )
        if category == "app":
            return None if app else ("OFF102", _rules.app_read(access.name, entry.kind))
        if category in ("helper_app", "method_app") and app:
            return None
        if category == "method_app":
            return "OFF103", _rules.method_call(access.name, entry.kind)
        return "OFF103", _rules.helper_call(
            access.name, entry.kind, category == "helper_request"
        )

    def find_files_read(self, start: FunctionInfo) -> tuple[str, ...] | None:
        """The call chain from ``start`` to a read of ``request.files``."""
        via0: tuple[str, ...] = (start.qualname,)
        queue = deque([(start, via0)])
        seen = {id(start)}
        while queue:
            func, via = queue.popleft()
            summary = self.summary(func)
            if any(a.files for a in summary.accesses):
                return via
            if len(via) >= self.max_depth:
                continue
            for edge in summary.edges:
                if id(edge.func) not in seen:
                    seen.add(id(edge.func))
                    queue.append((edge.func, via + (edge.func.qualname,)))
        return None


class _Walker:
    """Walk one function body (or a module's top level) once."""

    def __init__(
        self,
        analyzer: Analyzer,
        scope: Scope,
        func: FunctionInfo | None,
        *,
        import_time: bool,
        spawner: str,
    ) -> None:
        self.analyzer = analyzer
        self.project = analyzer.project
        self.module = scope.module
        self.scope = scope
        self.func = func
        self.import_time = import_time
        self.spawner = spawner
        self.summary = Summary()
        self.app = False
        self.req = False
        self.shadow: list[set[str]] = []
        self.await_depth = 0
        self.assigned: dict[int, str] = {}
        self.parent_call: ast.Call | None = None
        self.skip: set[int] = set()
        self._awaited: set[str] | None = None
        self.guards: frozenset[str] = frozenset()
        self.params: frozenset[str] = frozenset()
        # Inside ``with propagating():``: threads, thread pools and gevent
        # greenlets started here carry the context (docs/propagation.rst).
        self.propagating = False
        # Local names bound more than once, whose value depends on where in
        # the body they are read, and their value at the current point.
        # Globals the function binds are too: until then, the module's.
        rebound = [n for n in scope.global_names if n in scope.bindings]
        self.tracked = frozenset(
            [
                *(
                    name
                    for name, bindings in scope.bindings.items()
                    if len(bindings) > 1
                    and name not in scope.global_names
                    and name not in scope.nonlocal_names
                ),
                *rebound,
            ]
        )
        self.local: dict[str, Value] = {
            name: self.project.lookup(name, scope) for name in rebound
        }
        # Loops (statements and comprehensions) around the current node.
        self.loops: list[ast.AST] = []
        # The statement lists being walked, innermost last.
        self.blocks: list[list[ast.stmt]] = []
        # Spawning calls whose task is waited for at once.
        self.waited: set[int] = set()
        if func is not None and not isinstance(func.node, ast.Lambda):
            args = func.node.args
            self.params = frozenset(
                a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]
            )

    # -- resolution --------------------------------------------------------

    def shadowed(self, name: str) -> bool:
        if not self.shadow:
            return False
        return any(name in names for names in self.shadow)

    def resolve(
        self, expr: ast.expr
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        if self.shadow:
            root = _root_name(expr)
            if root is not None and self.shadowed(root):
                return None
        return self.project.resolve(expr, self.scope, self.local)

    def lookup(self, name: str) -> Value:
        if name in self.local:
            return self.local[name]
        return self.project.lookup(name, self.scope)

    # -- local names bound several times -----------------------------------

    def rebind(self, target: ast.expr, value: ast.expr | None) -> None:
        """Record the value a statement gives tracked local names."""
        if isinstance(target, ast.Name):
            if target.id in self.tracked:
                self.local[target.id] = None if value is None else self.resolve(value)
        elif (
            isinstance(target, (ast.Tuple, ast.List))
            and isinstance(value, (ast.Tuple, ast.List))
            and len(target.elts) == len(value.elts)
        ):
            for sub, item in zip(target.elts, value.elts, strict=True):
                self.rebind(sub, None if isinstance(item, ast.Starred) else item)
        elif isinstance(target, (ast.Tuple, ast.List, ast.Starred)):
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    self.rebind(node, None)

    def merge(self, *states: dict[str, Value]) -> None:
        """Join the local values of branches: a name that is a context proxy
        on any path stays one, names that differ otherwise are unknown.
        """
        merged: dict[str, Value] = {}
        for name in {n for state in states for n in state}:
            values = [state[name] for state in states if name in state]
            proxy = next((v for v in values if _is_proxy(v)), None)
            if proxy is not None:
                merged[name] = proxy
            elif all(v == values[0] for v in values):
                merged[name] = values[0]
            else:
                merged[name] = None
        self.local = merged

    def awaited_names(self) -> set[str]:
        if self._awaited is None:
            names: set[str] = set()
            if self.func is not None:
                for node in ast.walk(self.func.node):
                    if isinstance(node, ast.Await):
                        names.update(
                            n.id
                            for n in ast.walk(node.value)
                            if isinstance(n, ast.Name)
                        )
            self._awaited = names
        return self._awaited

    # -- statements --------------------------------------------------------

    def stmts(self, body: list[ast.stmt]) -> None:
        self.blocks.append(body)
        for node in body:
            self.stmt(node)
        self.blocks.pop()

    def stmt(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                self.expr(dec)
                self.decorator(dec, node)
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    self.expr(default)
            if node.name in self.tracked:
                self.local[node.name] = self.project.func_by_node.get(id(node))
            return
        if isinstance(node, ast.ClassDef):
            for expr in [*node.bases, *node.decorator_list]:
                self.expr(expr)
            for kw in node.keywords:
                self.expr(kw.value)
            # A class body runs when the class statement does.
            self.stmts(node.body)
            if node.name in self.tracked:
                self.local[node.name] = next(
                    (
                        b.value
                        for b in self.scope.bindings[node.name]
                        if isinstance(b, FixedBinding)
                        and isinstance(b.value, ClassInfo)
                        and b.value.node is node
                    ),
                    None,
                )
            return
        if isinstance(node, (ast.With, ast.AsyncWith)):
            saved_propagating = self.propagating
            saved = self.app, self.req
            for item in node.items:
                self.expr(item.context_expr)
                app, req = self.context_of(item.context_expr)
                self.app = self.app or app
                self.req = self.req or req
                self.propagating = self.propagating or self.turns_on_propagation(
                    item.context_expr
                )
                if item.optional_vars is not None and self.tracked:
                    self.rebind(item.optional_vars, item.context_expr)
            self.stmts(node.body)
            self.app, self.req = saved
            self.propagating = saved_propagating
            return
        if isinstance(node, ast.If):
            self.branch(node)
            return
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            self.loop(node)
            return
        if isinstance(node, TRY_NODES) and any(
            _catches_runtime_error(h) for h in node.handlers
        ):
            # The code expects a missing context and handles it.
            saved = self.app, self.req
            self.app = self.req = True
            self.stmts(node.body)
            self.app, self.req = saved
            for handler in node.handlers:
                self.handler(handler)
            self.stmts(node.orelse)
            self.stmts(node.finalbody)
            return
        kind = type(node)
        if kind is ast.Assign:
            assert isinstance(node, ast.Assign)
            targets = node.targets
            if len(targets) == 1 and isinstance(node.value, ast.Call):
                first = targets[0]
                if isinstance(first, ast.Name):
                    self.assigned[id(node.value)] = first.id
            self.expr(node.value)
            for target in targets:
                if not isinstance(target, ast.Name):
                    self.expr(target)
                if self.tracked:
                    self.rebind(target, node.value)
            return
        if kind is ast.Expr or kind is ast.Return:
            value = node.value  # type: ignore[attr-defined]
            if value is not None:
                self.expr(value)
            return
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.stmt):
                        self.stmt(item)
                    elif isinstance(item, ast.expr):
                        self.expr(item)
                    elif isinstance(item, ast.ExceptHandler):
                        self.handler(item)
                    elif isinstance(item, ast.match_case):
                        if item.guard is not None:
                            self.expr(item.guard)
                        self.stmts(item.body)
            elif isinstance(value, ast.expr):
                self.expr(value)
        if self.tracked:
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                self.rebind(node.target, node.value)
            elif isinstance(node, ast.AugAssign):
                self.rebind(node.target, None)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.partition(".")[0]
                    if bound in self.tracked:
                        module = alias.name if alias.asname else bound
                        self.imported(bound, ImportBinding(module, 0, None))
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if bound in self.tracked:
                        found = ImportBinding(node.module or "", node.level, alias.name)
                        self.imported(bound, found)

    def imported(self, name: str, binding: ImportBinding) -> None:
        """Record the value an import gives a tracked name."""
        self.local[name] = self.project.resolve_import(binding, self.module)

    def handler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.expr(node.type)
        if node.name is not None and node.name in self.tracked:
            self.local[node.name] = None
        self.stmts(node.body)

    def loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        """A loop body runs any number of times, each seeing the last one's
        local values.
        """
        if isinstance(node, ast.While):
            self.expr(node.test)
        else:
            self.expr(node.iter)
            self.expr(node.target)
            if self.tracked:
                self.rebind(node.target, None)
        before = dict(self.local)
        self.loops.append(node)
        self.stmts(node.body)
        self.loops.pop()
        if self.tracked:
            self.merge(before, self.local)
        self.stmts(node.orelse)

    def has_context(self, expr: ast.expr) -> tuple[bool, bool]:
        """What ``has_request_context()`` / ``has_app_context()`` test."""
        if isinstance(expr, ast.Call):
            value = self.resolve(expr.func)
            if isinstance(value, Ext):
                if value.name == "flask.has_request_context":
                    return True, True
                if value.name == "flask.has_app_context":
                    return True, False
        return False, False

    def known(self, test: ast.expr, truth: bool) -> Known:
        """What holds where ``test`` was found true (or false, if ``truth``
        is false): the contexts it checks for, and the parameters it tests.
        """
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return self.known(test.operand, not truth)
        if isinstance(test, ast.BoolOp):
            parts = [self.known(value, truth) for value in test.values]
            result = parts[0]
            if isinstance(test.op, ast.And) == truth:
                # ``a and b`` was true, or ``a or b`` false: so was each one.
                for part in parts[1:]:
                    result = result | part
            else:
                for part in parts[1:]:
                    result = result & part
            return result
        if isinstance(test, ast.Name) and test.id in self.params:
            # ``"!name"``: the parameter was false (or ``None``); a call
            # giving it a value makes what this guards unreachable.
            return Known(params=frozenset({test.id if truth else f"!{test.id}"}))
        if isinstance(test, ast.Compare):
            name = _none_test(test)
            if name is not None and name[0] in self.params and name[1] == truth:
                # ``param is None`` was true, or ``param is not None`` false.
                return Known(params=frozenset({f"!{name[0]}"}))
            return Known()
        if not truth:
            return Known()
        app, req = self.has_context(test)
        return Known(app, req)

    def assume(self, known: Known) -> Known:
        """Take ``known`` to hold from here on, and return what it adds."""
        added = Known(
            known.app and not self.app,
            known.req and not self.req,
            known.params - self.guards,
        )
        self.app = self.app or known.app
        self.req = self.req or known.req
        self.guards = self.guards | known.params
        return added

    def forget(self, added: Known) -> None:
        """Undo :meth:`assume`, keeping contexts pushed since then."""
        self.app = self.app and not added.app
        self.req = self.req and not added.req
        self.guards = self.guards - added.params

    def branch(self, node: ast.If) -> None:
        """An ``if`` statement and its ``elif`` chain.

        Each ``elif`` is an ``if`` nested in the previous one's ``orelse``;
        the chain is followed in a loop, as recursing would exhaust the
        recursion limit on long generated dispatchers.
        """
        # What the tests found false so far tell, for the next branches.
        added = Known()
        # Local values at the end of the branches that carry on after the if.
        ends: list[dict[str, Value]] = []
        # What holds after the statement when the branches before the
        # first one that carries on all return or raise: their tests were
        # false.
        after = Known()
        returned = True
        # The orelse an elif sits in: the block its test is evaluated in.
        outer: list[ast.stmt] | None = None
        while True:
            if outer is not None:
                self.blocks.append(outer)
            self.expr(node.test)
            if outer is not None:
                self.blocks.pop()
            before = dict(self.local) if self.tracked else self.local
            state = self.app, self.req, self.guards
            self.assume(self.known(node.test, True))
            self.stmts(node.body)
            self.app, self.req, self.guards = state
            if self.tracked:
                if not (node.body and isinstance(node.body[-1], _JUMPS)):
                    ends.append(self.local)
                self.local = dict(before)
            otherwise = self.known(node.test, False)
            returned = returned and bool(
                node.body and isinstance(node.body[-1], (ast.Return, ast.Raise))
            )
            if returned:
                after = after | otherwise
            added = added | self.assume(otherwise)
            orelse = node.orelse
            if len(orelse) == 1 and isinstance(orelse[0], ast.If):
                outer, node = orelse, orelse[0]
                continue
            self.stmts(orelse)
            break
        self.forget(added)
        if ends:
            self.merge(*ends, self.local)
        # ``if not has_request_context(): return`` guards the rest.
        self.assume(after)

    def turns_on_propagation(self, expr: ast.expr) -> bool:
        """Whether ``with expr:`` is ``with propagating():`` (not
        ``propagating(False)``).
        """
        if not isinstance(expr, ast.Call):
            return False
        value = self.resolve(expr.func)
        if not (isinstance(value, Ext) and value.name in PROPAGATING):
            return False
        enabled = expr.args[0] if expr.args else None
        for kw in expr.keywords:
            if kw.arg == "enabled":
                enabled = kw.value
        return enabled is None or not _is_falsy(enabled)

    def context_of(self, expr: ast.expr) -> tuple[bool, bool]:
        found = context_kind(expr)
        if found == (False, False) and isinstance(expr, ast.Name):
            # ``ctx = app.app_context()`` then ``with ctx:``
            for binding in self.scope.bindings.get(expr.id, ()):
                value = getattr(binding, "value", None)
                if isinstance(value, ast.expr):
                    found = context_kind(value)
                    if found != (False, False):
                        break
        return found

    def decorator(
        self, dec: ast.expr, node: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        expr = dec.func if isinstance(dec, ast.Call) else dec
        value = self.resolve(expr)
        if not (isinstance(value, Ext) and value.name == COPY_CONTEXT):
            return
        if self.import_time:
            self.analyzer.add(self.module, dec, "OFF111", _rules.copy_at_import())
        func = self.project.func_by_node.get(id(node))
        if func is not None:
            self.analyzer.copy_sites.append(
                (self.module, dec.lineno, dec.col_offset + 1, func)
            )

    # -- expressions -------------------------------------------------------

    def expr(self, node: ast.expr) -> None:
        kind = type(node)
        if kind is ast.Constant:
            return
        if kind is ast.Name:
            assert isinstance(node, ast.Name)
            if isinstance(node.ctx, ast.Load) and not self.shadowed(node.id):
                value = self.lookup(node.id)
                if isinstance(value, Ext) and value.name in _PROXIES:
                    self.access(node, node.id, value.name, False)
            return
        if kind is ast.Attribute:
            assert isinstance(node, ast.Attribute)
            if not self.attribute(node):
                self.expr(node.value)
            return
        if kind is ast.Call:
            assert isinstance(node, ast.Call)
            self.call(node)
            return
        if kind is ast.Lambda:
            assert isinstance(node, ast.Lambda)
            if id(node) in self.skip:
                return
            args = node.args
            self.shadow.append(
                {
                    a.arg
                    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]
                    + [x for x in (args.vararg, args.kwarg) if x is not None]
                }
            )
            self.expr(node.body)
            self.shadow.pop()
            return
        if isinstance(node, _COMPREHENSIONS):
            names: set[str] = set()
            for gen in node.generators:
                names.update(
                    n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)
                )
            self.shadow.append(names)
            for gen in node.generators:
                self.expr(gen.iter)
                for cond in gen.ifs:
                    self.expr(cond)
            self.loops.append(node)
            if isinstance(node, ast.DictComp):
                self.expr(node.key)
                self.expr(node.value)
            else:
                self.expr(node.elt)
            self.loops.pop()
            self.shadow.pop()
            return
        if kind is ast.IfExp:
            assert isinstance(node, ast.IfExp)
            self.conditional(node)
            return
        if kind is ast.BoolOp:
            assert isinstance(node, ast.BoolOp)
            # Each operand is evaluated only if the ones before it were true
            # (``and``) or false (``or``): ``has_request_context() and
            # request.path`` is guarded as in an if statement.
            truth = isinstance(node.op, ast.And)
            added = Known()
            for operand in node.values:
                self.expr(operand)
                added = added | self.assume(self.known(operand, truth))
            self.forget(added)
            return
        if kind is ast.NamedExpr:
            assert isinstance(node, ast.NamedExpr)
            self.expr(node.value)
            if self.tracked:
                self.rebind(node.target, node.value)
            return
        if kind is ast.Await:
            assert isinstance(node, ast.Await)
            self.await_depth += 1
            self.expr(node.value)
            self.await_depth -= 1
            return
        # Plain loop over _fields: ast.iter_child_nodes is a hot spot.
        for name in node._fields:
            child = getattr(node, name, None)
            if isinstance(child, ast.expr):
                self.expr(child)
            elif type(child) is list:
                for item in child:
                    if isinstance(item, ast.expr):
                        self.expr(item)
                    elif isinstance(item, ast.keyword):
                        self.expr(item.value)

    def conditional(self, node: ast.IfExp) -> None:
        """``a if test else b``, guarded as an if statement is; a chain of
        ``else c if other else d`` is followed in a loop.
        """
        added = Known()
        while True:
            self.expr(node.test)
            given = self.assume(self.known(node.test, True))
            self.expr(node.body)
            self.forget(given)
            added = added | self.assume(self.known(node.test, False))
            if not isinstance(node.orelse, ast.IfExp):
                break
            node = node.orelse
        self.expr(node.orelse)
        self.forget(added)

    def attribute(self, node: ast.Attribute) -> bool:
        """Record ``request.headers`` style reads, and reads of properties
        (which call the getter); ``True`` if nothing is left to walk.
        """
        base = node.value
        if not isinstance(base, (ast.Name, ast.Attribute)):
            return False
        if isinstance(base, ast.Name) and self.shadowed(base.id):
            return False
        value = self.resolve(base)
        if isinstance(value, (Inst, Super)):
            if isinstance(node.ctx, ast.Load):
                self.property_read(node, value)
            return False
        if not isinstance(value, Ext) or value.instance:
            return False
        if value.name in _PROXIES:
            name = f"{dotted(base)}.{node.attr}"
            files = value.name == "flask.request" and node.attr == "files"
            self.access(base, name, value.name, files)
            return True
        if isinstance(base, ast.Name) and f"{value.name}.{node.attr}" in _PROXIES:
            # ``import flask`` then ``flask.request`` alone.
            self.access(node, dotted(node), f"{value.name}.{node.attr}", False)
            return True
        return False

    def property_read(self, node: ast.Attribute, base: Inst | Super) -> None:
        """``obj.name`` on an instance, where ``name`` is a property: a call
        of its getter.
        """
        getter = self.project.attribute(base, node.attr)
        if (
            isinstance(getter, FunctionInfo)
            and any(_last_identifier(d) in _PROPERTIES for d in getter.decorators)
            and not self.analyzer.is_safe(getter)
        ):
            self.summary.edges.append(
                Edge(self.analyzer.decorated(getter), self.app, self.req, self.guards)
            )

    def access(self, node: ast.expr, name: str, target: str, files: bool) -> None:
        category = "request" if target in REQUEST_VARS else "app"
        self.summary.accesses.append(
            Access(
                node.lineno,
                node.col_offset + 1,
                name,
                category,
                files,
                self.app,
                self.req,
                self.guards,
                target,
            )
        )

    def call(self, node: ast.Call) -> None:
        func = node.func
        callee = self.resolve(func)
        if isinstance(callee, Ext) and not callee.instance:
            self.external_call(node, callee.name)
        elif isinstance(callee, FunctionInfo):
            if not self.analyzer.is_safe(callee):
                self.edge(self.analyzer.decorated(callee), node, callee)
        elif isinstance(callee, ClassInfo):
            init = self.project.class_member(callee, "__init__")
            if isinstance(init, FunctionInfo):
                self.edge(init, node)
            if self.project.thread_base(callee):
                self.thread_subclass(node, callee)
                if isinstance(init, FunctionInfo):
                    self.kept_proxies(node, callee, init)
        elif isinstance(callee, Inst):
            method = self.project.class_member(callee.cls, "__call__")
            if isinstance(method, FunctionInfo):
                self.edge(method, node)
        if isinstance(func, ast.Attribute):
            if (
                callee is None
                and func.attr in APP_METHOD_NAMES
                and self.app_method(func)
            ):
                self.summary.accesses.append(
                    Access(
                        node.lineno,
                        node.col_offset + 1,
                        dotted(func),
                        "method_app",
                        False,
                        self.app,
                        self.req,
                        self.guards,
                    )
                )
            if func.attr in _WAITS and isinstance(func.value, ast.Call):
                # ``executor.submit(fn).result()`` waits for the task.
                self.waited.add(id(func.value))
            if func.attr in _METHOD_SPAWNS and not isinstance(
                callee, (FunctionInfo, ClassInfo)
            ):
                self.method_spawn(node, func)
            elif func.attr == "__init__":
                self.base_init(node, func, callee)
            elif func.attr == "push" and not node.args:
                # ``app.app_context().push()``: the rest of the body has it.
                app, req = self.context_of(func.value)
                self.app = self.app or app
                self.req = self.req or req
        self.expr(func)
        saved = self.parent_call
        self.parent_call = node
        for arg in node.args:
            self.expr(arg)
        for kw in node.keywords:
            self.expr(kw.value)
        self.parent_call = saved

    def app_method(self, func: ast.Attribute) -> bool:
        """Whether ``func`` is a library method that needs an app context,
        such as ``mail.send`` on a Flask-Mail ``Mail``.
        """
        receiver = self.resolve(func.value)
        return (
            isinstance(receiver, Ext)
            and receiver.instance
            and func.attr in APP_METHODS.get(receiver.name, ())
        )

    def edge(
        self,
        callee: FunctionInfo,
        node: ast.Call,
        signature: FunctionInfo | None = None,
    ) -> None:
        """Record a call of ``callee``.

        :param signature: The function whose parameters the call's arguments
            are, if not ``callee`` (which may be a decorator's wrapper).
        """
        keywords = [(kw.arg, kw.value) for kw in node.keywords]
        falsy = self.falsy(signature or callee, node.args, keywords)
        self.summary.edges.append(
            Edge(
                callee,
                self.app,
                self.req,
                self.guards,
                falsy,
                self.forwards(node),
            )
        )

    def falsy(
        self,
        func: FunctionInfo,
        args: Sequence[ast.expr],
        keywords: Sequence[tuple[str | None, ast.expr]],
    ) -> frozenset[str]:
        """Guards known false in ``func`` called with these arguments:
        parameters given a constant false value, and ``"!name"`` for those
        given a value (see known()).
        """
        falsy: set[str] = set()
        for name, value in keywords:
            if name:
                if _is_falsy(value):
                    falsy.add(name)
                elif self.given(value):
                    falsy.add(f"!{name}")
        if args and not isinstance(func.node, ast.Lambda):
            names: list[str] | None = None
            for i, arg in enumerate(args):
                if isinstance(arg, ast.Starred):
                    break
                if _is_falsy(arg):
                    key = ""
                elif self.given(arg):
                    key = "!"
                else:
                    continue
                if names is None:
                    names = parameters(func)
                if i >= len(names):
                    break
                falsy.add(key + names[i])
        return frozenset(falsy)

    def given(self, expr: ast.expr) -> bool:
        """Whether an argument is surely a value, not ``None``: a true
        constant, an attribute, a call (other than ``.get()``), or a name
        that is not a parameter (which may pass on a ``None`` it was given)
        nor ever bound to a false constant here.
        """
        if isinstance(expr, ast.Constant):
            return bool(expr.value)
        if isinstance(expr, ast.Attribute):
            return True
        if isinstance(expr, ast.Call):
            return _last_identifier(expr.func) not in ("get", "pop", "getattr")
        if not isinstance(expr, ast.Name):
            return False
        name = expr.id
        if name in self.params or self.shadowed(name):
            return False
        func = self.func
        if func is not None and not isinstance(func.node, ast.Lambda):
            args = func.node.args
            if any(a is not None and a.arg == name for a in (args.vararg, args.kwarg)):
                return False
        scope: Scope | None = self.scope
        while scope is not None:
            bindings = scope.bindings.get(name)
            if bindings is not None:
                return not any(
                    isinstance(b, AssignBinding)
                    and _is_falsy(b.value)
                    or isinstance(b, FixedBinding)
                    and b.value is None
                    and scope.owner is not None
                    and name in _param_names(scope.owner)
                    for b in bindings
                )
            scope = scope.parent
        return True

    def forwards(self, node: ast.Call) -> bool:
        """Whether this is ``f(*args, **kwargs)`` in a function taking only
        ``*args, **kwargs``.
        """
        func = self.func
        if func is None or isinstance(func.node, ast.Lambda) or self.params:
            return False
        args = func.node.args
        names = {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        given = [a.value for a in node.args if isinstance(a, ast.Starred)]
        given += [kw.value for kw in node.keywords if kw.arg is None]
        return bool(given) and all(
            isinstance(e, ast.Name) and e.id in names for e in given
        )

    def external_call(self, node: ast.Call, name: str) -> None:
        if name in REQUEST_HELPERS or name in APP_HELPERS:
            category = "helper_request" if name in REQUEST_HELPERS else "helper_app"
            self.summary.accesses.append(
                Access(
                    node.lineno,
                    node.col_offset + 1,
                    dotted(node.func),
                    category,
                    False,
                    self.app,
                    self.req,
                    self.guards,
                )
            )
        elif name == COPY_CONTEXT:
            if self.import_time:
                self.analyzer.add(self.module, node, "OFF111", _rules.copy_at_import())
            if node.args:
                copied = self.resolve(node.args[0])
                if isinstance(copied, FunctionInfo):
                    self.analyzer.copy_sites.append(
                        (self.module, node.lineno, node.col_offset + 1, copied)
                    )
        elif name in THREAD_LIKE:
            kind, pos, key, args_pos, args_key = THREAD_LIKE[name]
            target = _argument(node, pos, key)
            args = _argument(node, args_pos, args_key)
            extra = list(args.elts) if isinstance(args, (ast.Tuple, ast.List)) else []
            carried = self.propagating and kind in ("thread", "timer")
            self.spawn(
                node,
                kind,
                target,
                extra,
                _dict_items(_argument(node, -1, "kwargs")),
                many=False,
                app=carried,
                req=carried,
            )
        elif name in SPAWN_FUNCS:
            kind, pos = SPAWN_FUNCS[name]
            carried = self.propagating and name.startswith("gevent.")
            if len(node.args) > pos:
                target, extra = node.args[pos], node.args[pos + 1 :]
            else:
                target, extra = _argument(node, -1, "run"), []
            keywords = _keywords(node) if name != "_thread.start_new_thread" else []
            self.spawn(
                node,
                kind,
                target,
                extra,
                keywords,
                many=False,
                app=carried,
                req=carried,
            )
        elif name in TASK_FUNCS:
            self.task(node)
        elif name == TO_THREAD and node.args:
            self.to_thread(node)

    def to_thread(self, node: ast.Call) -> None:
        """``asyncio.to_thread(fn, *args)`` runs ``fn`` in a copy of the
        caller's context: it has the contexts the caller has, as if called.
        """
        callee = self.resolve(node.args[0])
        if isinstance(callee, FunctionInfo) and not self.analyzer.is_safe(callee):
            call = ast.Call(node.args[0], node.args[1:], node.keywords)
            self.edge(self.analyzer.decorated(callee), call, callee)

    def kept_proxies(self, node: ast.Call, cls: ClassInfo, init: FunctionInfo) -> None:
        """OFF104 for a proxy given to a ``Thread`` subclass whose
        ``__init__`` keeps it on the thread (``self.req = req``), to be
        looked up when ``run()`` uses it.
        """
        if isinstance(init.node, ast.Lambda):
            return
        given: list[tuple[str, ast.expr]] = []
        names: list[str] | None = None
        for i, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred):
                break
            if isinstance(arg, (ast.Name, ast.Attribute)) and _is_proxy(
                self.resolve(arg)
            ):
                names = parameters(init) if names is None else names
                if i < len(names):
                    given.append((names[i], arg))
        for kw in node.keywords:
            value = kw.value
            if kw.arg and isinstance(value, (ast.Name, ast.Attribute)):
                if _is_proxy(self.resolve(value)):
                    given.append((kw.arg, value))
        if not given:
            return
        kept = _kept_params(init.node)
        kind = THREAD_LIKE[self.project.thread_base(cls) or "threading.Thread"][0]
        for param, arg in given:
            if param in kept:
                self.analyzer.add(
                    self.module, arg, "OFF104", _rules.proxy_passed(dotted(arg), kind)
                )

    def thread_subclass(
        self,
        node: ast.Call,
        cls: ClassInfo | None,
        spec: tuple[str, int, str, int, str] | None = None,
    ) -> None:
        """A ``Thread`` subclass made with a ``target``, or (in its
        ``__init__``) the base class's ``__init__`` called with one.

        :param spec: Where the call takes its target and ``args``, as in
            ``THREAD_LIKE``; by default, as the base class takes them if no
            project class defines ``__init__``, else as keywords only, since
            a subclass's own ``__init__`` may take other positional
            arguments.
        """
        if spec is None:
            base = self.project.thread_base(cls) if cls is not None else None
            spec = THREAD_LIKE[base or "threading.Thread"]
            if cls is None or self.project.class_member(cls, "__init__"):
                kind, _, key, _, args_key = spec
                spec = (kind, -1, key, -1, args_key)
        kind, pos, key, args_pos, args_key = spec
        target = _argument(node, pos, key)
        if target is None:
            return
        args = _argument(node, args_pos, args_key)
        extra = list(args.elts) if isinstance(args, (ast.Tuple, ast.List)) else []
        keywords = _dict_items(_argument(node, -1, "kwargs"))
        # A subclass whose run() pushes a context gives it to its target.
        app = req = False
        run = self.project.class_member(cls, "run") if cls is not None else None
        if isinstance(run, FunctionInfo):
            for sub in ast.walk(run.node):
                if isinstance(sub, (ast.With, ast.AsyncWith)):
                    for item in sub.items:
                        a, r = context_kind(item.context_expr)
                        app, req = app or a, req or r
        if self.propagating and kind in ("thread", "timer"):
            app = req = True
        self.spawn(node, kind, target, extra, keywords, many=False, app=app, req=req)

    def base_init(self, node: ast.Call, func: ast.Attribute, callee: Value) -> None:
        """``super().__init__(target=...)`` or ``Thread.__init__(self,
        target=...)`` in a ``Thread`` subclass: the target runs in the thread
        as it does with ``Thread(target=...)``.
        """
        cls = self.func.cls if self.func is not None else None
        receiver = self.resolve(func.value)
        if (
            isinstance(receiver, Ext)
            and not receiver.instance
            and receiver.name in THREAD_LIKE
        ):
            # Called on the class, so ``self`` comes first.
            kind, pos, key, args_pos, args_key = THREAD_LIKE[receiver.name]
            spec = (kind, pos + 1, key, args_pos + 1, args_key)
            self.thread_subclass(node, cls, spec)
            return
        base = self.project.thread_base(cls) if cls is not None else None
        if base is None:
            return
        if isinstance(receiver, Super) and callee is None:
            # No project base class defines __init__: this is Thread's own.
            self.thread_subclass(node, cls, THREAD_LIKE[base])
        elif isinstance(receiver, Super) or (
            isinstance(receiver, ClassInfo) and self.project.thread_base(receiver)
        ):
            # A project base class's __init__, taking a target by keyword.
            self.thread_subclass(node, cls)

    def method_spawn(self, node: ast.Call, func: ast.Attribute) -> None:
        attr = func.attr
        receiver = self.resolve(func.value)
        if isinstance(receiver, Inst):
            # A project subclass of a pool inherits the pool's methods.
            base = self.project.pool_base(receiver.cls)
            if base is None or self.project.class_member(receiver.cls, attr):
                # The project's own method of that name: followed as a call.
                return
            receiver = Ext(base, instance=True)
        if isinstance(receiver, (ModuleInfo, Super)):
            return
        ident = _last_identifier(func.value).lower()
        safe = (
            isinstance(receiver, Ext) and receiver.name.startswith(SAFE_SUBMIT_PREFIXES)
        ) or self.offload_extension(func.value)
        known = (
            isinstance(receiver, Ext)
            and receiver.instance
            and receiver.name in POOL_CLASSES
        )
        args = node.args
        carried = (
            self.propagating
            and isinstance(receiver, Ext)
            and receiver.name in PROPAGATED_POOLS
        )
        process = isinstance(receiver, Ext) and receiver.name in PROCESS_POOLS
        if attr == "submit":
            # The name only tells what a receiver is when nothing else does:
            # ``offload_pool = ThreadPoolExecutor()`` carries no context.
            if safe or ("offload" in ident and not known) or not args:
                return
            self.spawn(
                node,
                "process pool" if process else "executor",
                args[0],
                args[1:],
                _keywords(node),
                many=False,
                app=carried,
                req=carried,
            )
        elif attr in POOL_METHODS:
            if safe or not (known or "pool" in ident or "executor" in ident):
                return
            pos, many = POOL_METHODS[attr]
            target = _argument(node, pos, "func")
            extra: list[ast.expr] = []
            keywords: list[tuple[str | None, ast.expr]] = []
            if attr.startswith("apply") or attr == "spawn":
                extra = list(args[1:])
                given = _argument(node, 1, "args")
                if isinstance(given, (ast.Tuple, ast.List)):
                    extra = list(given.elts)
                keywords = (
                    _keywords(node)
                    if attr == "spawn"
                    else _dict_items(_argument(node, 2, "kwds"))
                )
            elif many:
                # ``pool.map(work, [request])``: a literal's items are what
                # the target is given.
                items = _argument(node, pos + 1, "iterable")
                if isinstance(items, (ast.Tuple, ast.List, ast.Set)):
                    for item in items.elts:
                        # starmap's items are tuples of arguments.
                        if isinstance(item, ast.Tuple):
                            extra.extend(item.elts)
                        else:
                            extra.append(item)
            is_executor = "executor" in ident or (
                isinstance(receiver, Ext) and "Executor" in receiver.name
            )
            kind = "executor" if is_executor else "pool"
            if process:
                kind = "process pool"
            if attr == "spawn":
                kind = "greenlet"
            self.spawn(
                node,
                kind,
                target,
                extra,
                keywords,
                many=many,
                method=attr,
                app=carried,
                req=carried,
            )
        elif attr == "run_in_executor":
            target = _argument(node, 1, "func")
            self.spawn(node, "executor", target, args[2:], many=False)
        elif attr == "start_background_task":
            target = _argument(node, 0, "target")
            self.spawn(
                node, "background task", target, args[1:], _keywords(node), many=False
            )
        elif attr == "create_task":
            loop = (
                isinstance(receiver, Ext)
                and receiver.instance
                and receiver.name in LOOP_FACTORIES
            )
            if loop or ident == "loop":
                self.task(node)

    def offload_extension(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is Flask-Offload's extension looked up by name,
        ``app.extensions["offload"]``, directly or through a name only ever
        bound to it.
        """
        if _is_offload_extension(expr):
            return True
        if not isinstance(expr, ast.Name):
            return False
        scope: Scope | None = self.scope
        while scope is not None:
            bindings = scope.bindings.get(expr.id)
            if bindings is not None:
                return all(
                    isinstance(b, AssignBinding) and _is_offload_extension(b.value)
                    for b in bindings
                )
            scope = scope.parent
        return False

    def task(self, node: ast.Call) -> None:
        """``asyncio.create_task(coro())`` in an async view, not awaited there."""
        if self.func is None or not self.func.is_async or not node.args:
            return
        if self.await_depth:
            return
        awaited = self.awaited_names()
        if self.assigned.get(id(node)) in awaited:
            return
        parent = self.parent_call
        if (
            parent is not None
            and isinstance(parent.func, ast.Attribute)
            and isinstance(parent.func.value, ast.Name)
            and parent.func.value.id in awaited
        ):
            # ``tasks.append(create_task(...))`` then ``await gather(*tasks)``.
            return
        coro = node.args[0]
        if isinstance(coro, ast.Call):
            self.spawn(node, "task", coro.func, [], many=False)

    # -- entry points ------------------------------------------------------

    def spawn(
        self,
        node: ast.Call,
        kind: str,
        target: ast.expr | None,
        extra: list[ast.expr],
        keywords: Sequence[tuple[str | None, ast.expr]] = (),
        *,
        many: bool,
        method: str = "map",
        app: bool = False,
        req: bool = False,
    ) -> None:
        """Record what a call starting background work runs.

        :param target: What it runs.
        :param extra: The positional arguments it gives the target.
        :param keywords: The keyword arguments it gives the target, as
            ``(name, value)``.
        """
        if target is not None and extra and self.copied_context_run(target):
            # ``Thread(target=ctx.run, args=(fn,))`` with ``ctx =
            # copy_context()``: ``fn`` runs in a copy of this context, as if
            # called here (see to_thread()).
            callee = self.resolve(extra[0])
            if isinstance(callee, FunctionInfo) and not self.analyzer.is_safe(callee):
                call = ast.Call(
                    extra[0],
                    extra[1:],
                    [ast.keyword(name, value) for name, value in keywords],
                )
                self.edge(self.analyzer.decorated(callee), call, callee)
            return
        for arg in [*extra, *(value for _, value in keywords)]:
            if isinstance(arg, ast.Starred):
                arg = arg.value
            if not isinstance(arg, (ast.Name, ast.Attribute)):
                continue
            value = self.resolve(arg)
            if isinstance(value, Ext) and not value.instance and value.name in _PROXIES:
                name = dotted(arg)
                self.analyzer.add(
                    self.module, arg, "OFF104", _rules.proxy_passed(name, kind)
                )
            elif isinstance(value, FunctionInfo):
                self.target(
                    node,
                    kind,
                    arg,
                    many=False,
                    method=method,
                    app=app,
                    req=req,
                    given=True,
                )
        if target is not None:
            self.target(
                node,
                kind,
                target,
                many=many,
                method=method,
                app=app,
                req=req,
                args=() if many else extra,
                keywords=() if many else keywords,
            )

    def through_class(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is a method looked up on its class
        (``Exporter.run``), which takes the instance as its first argument.
        """
        return isinstance(expr, ast.Attribute) and isinstance(
            self.resolve(expr.value), ClassInfo
        )

    def copied_context_run(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is the ``run`` method of a context made by
        ``contextvars.copy_context()``.
        """
        if not isinstance(expr, ast.Attribute) or expr.attr != "run":
            return False
        value = self.resolve(expr.value)
        return (
            isinstance(value, Ext)
            and value.instance
            and value.name == COPY_CONTEXT_VARS
        )

    def target(
        self,
        node: ast.Call,
        kind: str,
        expr: ast.expr,
        *,
        many: bool,
        method: str,
        app: bool,
        req: bool,
        given: bool = False,
        args: Sequence[ast.expr] = (),
        keywords: Sequence[tuple[str | None, ast.expr]] = (),
    ) -> None:
        """Record the function ``expr`` names as an entry point.

        :param given: ``expr`` is an argument for the target, not the target.
        :param args: The positional arguments the target is called with.
        :param keywords: Its keyword arguments, as ``(name, value)``.
        """
        if isinstance(expr, ast.Call) and expr.args:
            callee = self.resolve(expr.func)
            if isinstance(callee, Ext) and callee.name == PARTIAL:
                self.spawn(
                    node,
                    kind,
                    expr.args[0],
                    [*expr.args[1:], *args],
                    [*_keywords(expr), *keywords],
                    many=many,
                    method=method,
                    app=app,
                    req=req,
                )
                return
        if isinstance(expr, ast.Lambda):
            self.skip.add(id(expr))
            func = lambda_function(
                self.project, expr, self.scope, f"{self.spawner}.<lambda>"
            )
            func.report_at = (node.lineno, node.col_offset + 1)
            self.analyzer.entries.append(Entry(func, kind, self.spawner, app, req))
            return
        value = self.resolve(expr)
        if (
            value is None
            and not given
            and not app
            and not req
            and isinstance(expr, ast.Attribute)
            and expr.attr in APP_METHOD_NAMES
            and self.app_method(expr)
        ):
            # ``Thread(target=mail.send, args=(msg,))``.
            self.analyzer.add(
                self.module,
                node,
                "OFF103",
                _rules.method_call(dotted(expr), kind),
                (self.spawner,),
            )
            return
        if isinstance(value, Ext):
            if value.name == COPY_CONTEXT:
                if many:
                    self.shared_wrapper(node, expr, method)
                elif not given:
                    self.shared_in_loop(node, expr)
            return
        if isinstance(value, Inst):
            value = self.project.class_member(value.cls, "__call__")
        if not isinstance(value, FunctionInfo):
            return
        kinds = self.analyzer.decorator_kinds(value)
        if "copy" in kinds:
            if many:
                self.shared_wrapper(node, expr, method)
            elif not given:
                self.shared_in_loop(node, expr)
        if kinds:
            return
        falsy: frozenset[str] = frozenset()
        if not given and not self.through_class(expr):
            falsy = self.falsy(value, args, _final_keywords(keywords))
        value = self.analyzer.decorated(value)
        self.analyzer.entries.append(Entry(value, kind, self.spawner, app, req, falsy))

    def shared_in_loop(self, node: ast.Call, expr: ast.expr) -> None:
        """OFF112 for a wrapper made before a loop that starts it on each pass."""
        if not self.loops or not isinstance(expr, ast.Name) or id(node) in self.waited:
            return
        loop = self.loops[-1]
        if isinstance(loop, (ast.For, ast.AsyncFor, ast.While)) and self.blocks:
            block = self.blocks[-1]
            if block and isinstance(block[-1], _JUMPS[:3]):
                # The loop ends (``break``, ``return``) after starting it.
                return
        start = (loop.lineno, loop.col_offset)  # type: ignore[attr-defined]
        end = (loop.end_lineno, loop.end_col_offset)  # type: ignore[attr-defined]
        for binding in self.scope.bindings.get(expr.id, ()):
            made: ast.AST | None = None
            if isinstance(binding, AssignBinding):
                made = binding.value
            elif isinstance(binding, FixedBinding) and isinstance(
                binding.value, FunctionInfo
            ):
                made = binding.value.node
            if made is None:
                # Where it was bound is not known.
                return
            if start <= (made.lineno, made.col_offset) <= end:  # type: ignore[attr-defined]
                # Made again on each pass.
                return
        waiter = self.assigned.get(id(node))
        if waiter is not None and _waits_for(loop, waiter):
            # ``t = Thread(...); t.start(); t.join()``: one at a time.
            return
        self.analyzer.add(
            self.module,
            node,
            "OFF112",
            _rules.shared_in_loop(dotted(expr), dotted(node.func)),
        )

    def shared_wrapper(self, node: ast.Call, expr: ast.expr, method: str) -> None:
        func = node.func
        call = dotted(func) if isinstance(func, ast.Attribute) else method
        self.analyzer.add(
            self.module, node, "OFF112", _rules.shared_wrapper(dotted(expr), call)
        )


def _kept_params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names a method stores on its first argument: ``self.req = req``."""
    args = [*node.args.posonlyargs, *node.args.args]
    if not args:
        return set()
    self_name = args[0].arg
    kept = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assign) and isinstance(sub.value, ast.Name):
            for target in sub.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == self_name
                ):
                    kept.add(sub.value.id)
    return kept


def _task_options(func: FunctionInfo) -> set[str]:
    """Options a task decorator sets to a true constant:
    ``@celery.task(request_context=True)`` gives ``{"request_context"}``.
    """
    return {
        kw.arg
        for dec in func.decorators
        if isinstance(dec, ast.Call)
        for kw in dec.keywords
        if kw.arg and isinstance(kw.value, ast.Constant) and kw.value.value
    }


def _param_names(func: FunctionInfo) -> set[str]:
    node = func.node
    args = node.args
    return {
        a.arg
        for a in [
            *args.posonlyargs,
            *args.args,
            *args.kwonlyargs,
            args.vararg,
            args.kwarg,
        ]
        if a is not None
    }


def _none_test(test: ast.Compare) -> tuple[str, bool] | None:
    """For ``name is None`` (or ``==``): ``(name, True)``; for ``name is not
    None`` (or ``!=``): ``(name, False)``; else ``None``.
    """
    if len(test.ops) != 1 or not isinstance(test.left, ast.Name):
        return None
    right = test.comparators[0]
    if not (isinstance(right, ast.Constant) and right.value is None):
        return None
    op = test.ops[0]
    if isinstance(op, (ast.Is, ast.Eq)):
        return test.left.id, True
    if isinstance(op, (ast.IsNot, ast.NotEq)):
        return test.left.id, False
    return None


def _waits_for(loop: ast.AST, name: str) -> bool:
    """Whether a loop body calls ``name.join()`` (or ``result``, ``get``,
    ``wait``), finishing each task before starting the next.
    """
    for sub in ast.walk(loop):
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr in _WAITS
            and isinstance(sub.func.value, ast.Name)
            and sub.func.value.id == name
        ):
            return True
    return False


# Calls that run a function given to them in the background.
_HANDS_OFF = frozenset(
    {
        "submit",
        "run_in_executor",
        "start_background_task",
        "spawn",
        "apply_async",
        *(name.rpartition(".")[2] for name in [*THREAD_LIKE, *SPAWN_FUNCS]),
    }
)


def _is_offload_extension(expr: ast.expr) -> bool:
    """``<app>.extensions["offload"]`` or ``<app>.extensions.get("offload")``."""
    return _extension_key(expr) == "offload"


def _extension_key(expr: ast.expr) -> str | None:
    """``key`` for ``<app>.extensions[key]`` or ``<app>.extensions.get(key)``
    with a constant string key, else ``None``.
    """
    if isinstance(expr, ast.Subscript):
        mapping, key = expr.value, expr.slice
    elif (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr == "get"
        and expr.args
    ):
        mapping, key = expr.func.value, expr.args[0]
    else:
        return None
    if (
        isinstance(mapping, ast.Attribute)
        and mapping.attr == "extensions"
        and isinstance(key, ast.Constant)
        and isinstance(key.value, str)
    ):
        return key.value
    return None


def _returned_function(project: Project, func: FunctionInfo) -> FunctionInfo | None:
    """The function defined in ``func`` that ``func`` returns, directly or
    as ``functools.wraps(f)(inner)``.
    """
    if isinstance(func.node, ast.Lambda):
        return None
    for stmt in func.node.body:
        if not isinstance(stmt, ast.Return) or stmt.value is None:
            continue
        value = stmt.value
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Call)
            and len(value.args) == 1
        ):
            value = value.args[0]
        if not isinstance(value, ast.Name):
            continue
        found = project.lookup(value.id, func.scope)
        if isinstance(found, FunctionInfo) and found.scope.parent is func.scope:
            return found
    return None


def _uses_as_callable(node: FunctionNode, name: str) -> bool:
    """Whether a function body (not the functions it defines) calls ``name``
    or starts it in the background, as in ``Thread(target=name)``.
    """
    todo: list[ast.AST] = list(node.body) if isinstance(node.body, list) else []
    while todo:
        sub = todo.pop()
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name) and sub.func.id == name:
                return True
            for kw in sub.keywords:
                value = kw.value
                if kw.arg in ("target", "function") and isinstance(value, ast.Name):
                    if value.id == name:
                        return True
            if _last_identifier(sub.func) in _HANDS_OFF and any(
                isinstance(a, ast.Name) and a.id == name for a in sub.args
            ):
                return True
        todo.extend(ast.iter_child_nodes(sub))
    return False


def _keywords(node: ast.Call) -> list[tuple[str | None, ast.expr]]:
    """A call's keyword arguments, as ``(name, value)``."""
    return [(kw.arg, kw.value) for kw in node.keywords]


def _dict_items(expr: ast.expr | None) -> list[tuple[str | None, ast.expr]]:
    """The string-keyed items of a dict literal (``kwargs={"a": 1}``), as
    ``(name, value)``, with ``(None, value)`` for a ``**value`` in it;
    ``dict(a=1)`` too.
    """
    if isinstance(expr, ast.Dict):
        items: list[tuple[str | None, ast.expr]] = []
        for k, v in zip(expr.keys, expr.values, strict=True):
            if k is None:
                items.append((None, v))
            elif isinstance(k, ast.Constant) and isinstance(k.value, str):
                items.append((k.value, v))
        return items
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        if expr.func.id == "dict" and not expr.args:
            return _keywords(expr)
    return []


def _final_keywords(
    keywords: Sequence[tuple[str | None, ast.expr]],
) -> list[tuple[str | None, ast.expr]]:
    """The keywords a call surely ends up with, the last of each name
    winning (a partial's, then the call's own); none at all after a
    ``**mapping``, which may replace any of them.
    """
    if any(name is None for name, _ in keywords):
        return []
    return list(dict(keywords).items())


def _argument(node: ast.Call, pos: int, key: str) -> ast.expr | None:
    for kw in node.keywords:
        if kw.arg == key:
            return kw.value
    if 0 <= pos < len(node.args) and not isinstance(node.args[pos], ast.Starred):
        return node.args[pos]
    return None
