"""Parse a project into modules, classes, functions and scopes, and resolve
names in them statically, following the project's own imports.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import warnings
from collections.abc import Container
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass

from ._names import canonical
from ._names import CELERY
from ._names import PARTIAL
from ._names import POOL_CLASSES
from ._names import PROTECTED_TOPS
from ._names import STAR_NAMES
from ._names import THREAD_LIKE

#: Statements with handlers: ``try``, and ``try``/``except*`` (Python 3.11).
if sys.version_info >= (3, 11):
    TRY_NODES = (ast.Try, ast.TryStar)
else:  # pragma: no cover
    TRY_NODES = (ast.Try,)

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda

# Directories never worth descending into.
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv"})


@dataclass(frozen=True)
class Ext:
    """A name defined outside the project, such as ``flask.request``.

    :param name: The canonical dotted name.
    :param instance: The value is an instance created by calling ``name``.
    """

    name: str
    instance: bool = False


@dataclass(frozen=True)
class Inst:
    """An instance of a project class."""

    cls: ClassInfo


@dataclass(frozen=True)
class Super:
    """The object ``super()`` returns inside a method of ``cls``."""

    cls: ClassInfo


@dataclass(eq=False)
class ImportBinding:
    """A name bound by an import statement."""

    module: str
    level: int
    attr: str | None


@dataclass(eq=False)
class AssignBinding:
    """A name bound to the value of an expression."""

    value: ast.expr
    scope: Scope


@dataclass(eq=False)
class FixedBinding:
    """A name bound to a known value, or to an unknown one (``None``)."""

    value: Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None


Binding = ImportBinding | AssignBinding | FixedBinding


class Scope:
    """Names bound in a module or function body.

    Class bodies get no scope: as in Python, methods do not see them.
    """

    __slots__ = (
        "module",
        "parent",
        "owner",
        "bindings",
        "global_names",
        "nonlocal_names",
        "live",
    )

    def __init__(self, module: ModuleInfo, parent: Scope | None) -> None:
        self.module = module
        self.parent = parent
        # The function whose body this is (``None`` for a module).
        self.owner: FunctionInfo | None = None
        self.bindings: dict[str, list[Binding]] = {}
        self.global_names: set[str] = set()
        self.nonlocal_names: set[str] = set()
        # For a module: the index of each name's last binding made
        # unconditionally at top level, which replaces those before it
        # for the functions called once the module has run.
        self.live: dict[str, int] = {}

    def bind(self, name: str, binding: Binding) -> None:
        self.bindings.setdefault(name, []).append(binding)

    def copy(self, parent: Scope | None) -> Scope:
        """The same bindings under another parent, to rebind some names."""
        scope = Scope(self.module, parent)
        scope.owner = self.owner
        scope.bindings = dict(self.bindings)
        scope.global_names = self.global_names
        scope.nonlocal_names = self.nonlocal_names
        scope.live = self.live
        return scope


class ModuleInfo:
    """One parsed source file."""

    def __init__(
        self, name: str, path: str, real: str, tree: ast.Module, source: bytes
    ) -> None:
        self.name = name
        self.source = source
        self.path = path
        self.real = real
        self.tree = tree
        self.is_package = os.path.basename(real) == "__init__.py"
        self.scope = Scope(self, None)
        self.star_imports: list[ImportBinding] = []
        self._lines: list[str] | None = None

    def __repr__(self) -> str:
        return f"<module {self.name}>"

    @property
    def lines(self) -> list[str]:
        """The source's lines, numbered as ``ast`` numbers them: split at
        ``\\n``, ``\\r\\n`` and ``\\r`` only (``str.splitlines`` also splits
        at form feeds and other separators, which would shift every line
        after them).
        """
        if self._lines is None:
            try:
                text = importlib.util.decode_source(self.source)
            except (SyntaxError, LookupError, UnicodeDecodeError):
                text = self.source.decode("utf-8", "replace")
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            self._lines = text.split("\n")
        return self._lines

    def char_col(self, line: int, col: int) -> int:
        """The 1-based column in characters for ``ast``'s 1-based column
        ``col`` on ``line``, which counts UTF-8 bytes.
        """
        lines = self.lines
        if not 0 < line <= len(lines):
            return col
        head = lines[line - 1].encode("utf-8", "replace")[: col - 1]
        return len(head.decode("utf-8", "ignore")) + 1


class ClassInfo:
    """A class statement."""

    def __init__(
        self, node: ast.ClassDef, module: ModuleInfo, qualname: str, scope: Scope
    ) -> None:
        self.node = node
        self.module = module
        self.qualname = qualname
        # Where the class statement sits; its bases are resolved there.
        self.scope = scope
        self.methods: dict[str, FunctionInfo] = {}
        self.nested: dict[str, ClassInfo] = {}
        self.attrs: dict[str, list[Binding]] = {}

    def __repr__(self) -> str:
        return f"<class {self.qualname}>"


class FunctionInfo:
    """A def, an async def, or a lambda given as a background target."""

    def __init__(
        self,
        node: FunctionNode,
        module: ModuleInfo,
        qualname: str,
        scope: Scope,
        cls: ClassInfo | None,
    ) -> None:
        self.node = node
        self.module = module
        self.qualname = qualname
        # The function's own local scope; its parent is the enclosing one.
        self.scope = scope
        self.cls = cls
        self.decorators: list[ast.expr] = (
            [] if isinstance(node, ast.Lambda) else node.decorator_list
        )
        # For a lambda target, findings in its body go on this line.
        self.report_at: tuple[int, int] | None = None
        # Set on the undecorated body of a function with project decorators:
        # the function it is the body of.
        self.body_of: FunctionInfo | None = None

    @property
    def is_async(self) -> bool:
        return isinstance(self.node, ast.AsyncFunctionDef)

    def __repr__(self) -> str:
        return f"<function {self.qualname}>"


#: What an expression may resolve to; ``None`` when it is not known.
Value = Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None


def too_deep(path: str) -> str:
    """The warning for a file nested too deeply for the checker's walks."""
    return f"{path}: skipped, it is nested too deeply to be analysed"


def iter_python_files(path: str) -> Iterator[str]:
    """Yield the ``.py`` files under a directory, sorted, skipping hidden
    directories, caches and virtual environments.

    :param path: A directory.
    """
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _module_names(real: str, root: str) -> list[str]:
    """Dotted names a file can be imported as: its name inside its package
    (walking up ``__init__.py`` files) and its path from the checked root.
    """
    parts: list[str] = []
    base = os.path.splitext(os.path.basename(real))[0]
    if base != "__init__":
        parts.append(base)
    directory = os.path.dirname(real)
    while os.path.exists(os.path.join(directory, "__init__.py")):
        parts.append(os.path.basename(directory))
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    names = [".".join(reversed(parts))] if parts else []
    rel = os.path.relpath(os.path.splitext(real)[0], root)
    if not rel.startswith(".."):
        rel_parts = [p for p in rel.split(os.sep) if p and p != "."]
        if rel_parts and rel_parts[-1] == "__init__":
            rel_parts.pop()
        if rel_parts and all(p.isidentifier() for p in rel_parts):
            dotted = ".".join(rel_parts)
            if dotted not in names:
                # Outside a package, the path from the root reads better.
                in_package = os.path.exists(
                    os.path.join(os.path.dirname(real), "__init__.py")
                )
                names.insert(len(names) if in_package else 0, dotted)
    return names


class Project:
    """All modules being checked, with name resolution across them."""

    def __init__(self) -> None:
        self.modules: list[ModuleInfo] = []
        self.functions: list[FunctionInfo] = []
        self.classes: list[ClassInfo] = []
        self.by_name: dict[str, list[ModuleInfo]] = {}
        self.by_path: dict[str, ModuleInfo] = {}
        self.func_by_node: dict[int, FunctionInfo] = {}
        self.errors: list[str] = []
        self._memo: dict[int, object] = {}
        self._thread_base: dict[int, str | None] = {}
        self._pool_base: dict[int, str | None] = {}
        self._celery_base: dict[int, str | None] = {}
        self._returns: dict[int, Ext | None] = {}

    # -- loading -----------------------------------------------------------

    def add_file(self, path: str, root: str) -> None:
        """Parse one file and index it.

        :param path: The path as it should be shown in findings.
        :param root: The directory the file was found under.
        """
        real = os.path.abspath(path)
        key = os.path.splitext(real)[0]
        if os.path.basename(key) == "__init__":
            key = os.path.dirname(key)
        if key in self.by_path:
            return
        try:
            with open(real, "rb") as f:
                source = f.read()
            # Old code full of invalid escapes must not flood the output.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError, RecursionError) as e:
            line = getattr(e, "lineno", None)
            where = f":{line}" if line else ""
            self.errors.append(f"{path}{where}: skipped, it could not be parsed ({e})")
            return
        except OSError as e:
            self.errors.append(f"{path}: skipped, it could not be read ({e})")
            return
        names = _module_names(real, root)
        module = ModuleInfo(names[0] if names else key, path, real, tree, source)
        functions, classes = len(self.functions), len(self.classes)
        try:
            _Builder(self, module).build()
        except RecursionError:
            # Leave no trace of the file, as if it could not be parsed.
            for func in self.functions[functions:]:
                del self.func_by_node[id(func.node)]
            del self.functions[functions:]
            del self.classes[classes:]
            self.errors.append(too_deep(path))
            return
        self.modules.append(module)
        self.by_path[key] = module
        for name in names:
            self.by_name.setdefault(name, []).append(module)

    # -- modules -----------------------------------------------------------

    def find_module(self, dotted: str, importer: ModuleInfo) -> ModuleInfo | None:
        """Find the project module an absolute import names.

        :param dotted: The module's dotted name.
        :param importer: The module doing the import; when several files
            match, the one sharing the longest path with it wins.
        """
        if dotted.partition(".")[0] in PROTECTED_TOPS:
            return None
        found = self.by_name.get(dotted)
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        return max(
            found,
            key=lambda m: (len(os.path.commonpath([m.real, importer.real])), m.real),
        )

    def _relative_base(self, module: ModuleInfo, level: int) -> str:
        base = os.path.dirname(module.real)
        for _ in range(level - 1):
            base = os.path.dirname(base)
        return base

    def resolve_import(
        self, b: ImportBinding, module: ModuleInfo
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        if b.level:
            base = self._relative_base(module, b.level)
            parts = b.module.split(".") if b.module else []
            target = os.path.join(base, *parts)
            if b.attr is None:
                return self.by_path.get(target)
            package = self.by_path.get(target)
            if package is not None:
                value = self.module_member(package, b.attr)
                if value is not None:
                    return value
            return self.by_path.get(os.path.join(target, b.attr))
        if b.attr is None:
            found = self.find_module(b.module, module)
            return found if found is not None else Ext(canonical(b.module))
        found = self.find_module(b.module, module)
        if found is None:
            return Ext(canonical(f"{b.module}.{b.attr}"))
        return self.module_member(found, b.attr)

    def module_member(
        self, module: ModuleInfo, name: str
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        """Resolve ``module.name``: a global of the module, a name it
        star-imports, or a submodule of a package.
        """
        scope = module.scope
        bindings = scope.bindings.get(name)
        if bindings is not None:
            return self.resolve_bindings(bindings, scope, scope.live.get(name, 0))
        # The last star import binding the name wins.
        for star in reversed(module.star_imports):
            source = self.resolve_import(star, module)
            if isinstance(source, Ext) and not source.instance:
                # Another library's names are not known, only those the
                # checker looks for.
                full = canonical(f"{source.name}.{name}")
                if full in STAR_NAMES:
                    return Ext(full)
            elif isinstance(source, ModuleInfo) and source is not module:
                key = id(star)
                if self._memo.get(key, False) is None:
                    continue
                self._memo[key] = None
                try:
                    value = self.module_member(source, name)
                finally:
                    del self._memo[key]
                if value is not None:
                    return value
        if module.is_package:
            sub = self.by_path.get(os.path.join(os.path.dirname(module.real), name))
            if sub is not None:
                return sub
        return None

    # -- names -------------------------------------------------------------

    def resolve_bindings(
        self, bindings: list[Binding], scope: Scope, live: int = 0
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        """The first binding of a name whose value is known wins; a name
        bound only to unknown values (a parameter, a loop variable) is
        unknown, which is what makes ``def f(request)`` shadow Flask's.

        :param live: Where the bindings that replace the earlier ones start
            (see :attr:`Scope.live`); if none of them is known, as in
            ``current_app: MyApp = current_app``, the earlier ones count.
        """
        if live:
            value = self.resolve_bindings(bindings[live:], scope)
            if value is not None:
                return value
        for b in bindings:
            value = self._resolve_binding(b, scope)
            if value is not None:
                return value
        return None

    def _resolve_binding(
        self, b: Binding, scope: Scope
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        if isinstance(b, FixedBinding):
            return b.value
        key = id(b)
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        # Mark as in progress so ``x = x.y`` and import cycles end.
        self._memo[key] = None
        if isinstance(b, ImportBinding):
            value = self.resolve_import(b, scope.module)
        else:
            value = self.resolve(b.value, b.scope)
        self._memo[key] = value
        return value

    def lookup(
        self, name: str, scope: Scope
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        s: Scope | None = scope
        while s is not None:
            if name in s.global_names:
                s = s.module.scope
                continue
            bindings = s.bindings.get(name)
            if bindings is not None and name not in s.nonlocal_names:
                return self.resolve_bindings(bindings, s, s.live.get(name, 0))
            s = s.parent
        return (
            self.module_member(scope.module, name)
            if scope.module.star_imports
            else None
        )

    def resolve(
        self,
        expr: ast.expr,
        scope: Scope,
        local: Mapping[str, Value] | None = None,
    ) -> Value:
        """Statically resolve an expression to what it names, or ``None``.

        :param expr: A name, attribute chain or call.
        :param scope: The scope the expression appears in.
        :param local: Values of local names at this point of the body, which
            take precedence over their bindings (a later ``req = other()``
            ends an earlier ``req = request``).
        """
        if isinstance(expr, ast.Name):
            if local and expr.id in local:
                return local[expr.id]
            return self.lookup(expr.id, scope)
        if isinstance(expr, ast.Attribute):
            base = self.resolve(expr.value, scope, local)
            return None if base is None else self.attribute(base, expr.attr)
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Name) and func.id == "super":
                owner = self.enclosing_class(scope)
                return Super(owner) if owner is not None else None
            callee = self.resolve(func, scope, local)
            if isinstance(callee, ClassInfo):
                return Inst(callee)
            if isinstance(callee, FunctionInfo):
                return self.returned(callee)
            if isinstance(callee, Ext) and not callee.instance:
                if callee.name == PARTIAL and len(expr.args) == 1:
                    # ``functools.partial(threading.Thread, daemon=True)``
                    # takes the same arguments as ``threading.Thread``.
                    inner = self.resolve(expr.args[0], scope, local)
                    if isinstance(inner, Ext) and not inner.instance:
                        return inner
                return Ext(callee.name, instance=True)
        return None

    def returned(self, func: FunctionInfo) -> Ext | None:
        """The library object a project function makes and returns, such as
        the ``Celery(...)`` of a ``make_celery(app)`` factory, or ``None``.

        Only instances of library classes are followed: what a call of the
        project's own code returns stays unknown, as before.
        """
        key = id(func.node)
        if key in self._returns:
            return self._returns[key]
        # Mark as in progress so recursive factories end.
        self._returns[key] = None
        found: Ext | None = None
        for expr in _returned_exprs(func.node):
            value = self.resolve(expr, func.scope)
            if isinstance(value, Ext) and value.instance:
                found = value
                break
        self._returns[key] = found
        return found

    def enclosing_class(self, scope: Scope) -> ClassInfo | None:
        return scope.owner.cls if scope.owner is not None else None

    def attribute(
        self,
        base: Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo,
        attr: str,
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        if isinstance(base, Ext):
            if base.instance:
                return None
            return Ext(canonical(f"{base.name}.{attr}"))
        if isinstance(base, ModuleInfo):
            value = self.module_member(base, attr)
            if value is None and not base.is_package:
                return None
            if value is None:
                found = self.find_module(f"{base.name}.{attr}", base)
                return found
            return value
        if isinstance(base, ClassInfo):
            return self.class_member(base, attr)
        if isinstance(base, Inst):
            return self.class_member(base.cls, attr)
        if isinstance(base, Super):
            for parent in self.bases(base.cls):
                value = self.class_member(parent, attr)
                if value is not None:
                    return value
        return None

    def bases(self, cls: ClassInfo) -> list[ClassInfo]:
        result = []
        for expr in cls.node.bases:
            value = self.resolve(expr, cls.scope)
            if isinstance(value, ClassInfo) and value is not cls:
                result.append(value)
        return result

    def class_member(
        self, cls: ClassInfo, attr: str, _seen: set[int] | None = None
    ) -> Ext | Inst | Super | ClassInfo | FunctionInfo | ModuleInfo | None:
        """Look ``attr`` up on a class and its project bases, depth first."""
        seen = _seen if _seen is not None else set()
        if id(cls) in seen:
            return None
        seen.add(id(cls))
        if attr in cls.methods:
            return cls.methods[attr]
        if attr in cls.nested:
            return cls.nested[attr]
        if attr in cls.attrs:
            value = self.resolve_bindings(cls.attrs[attr], cls.scope)
            if value is not None:
                return value
        for parent in self.bases(cls):
            value = self.class_member(parent, attr, seen)
            if value is not None:
                return value
        return None

    def thread_base(self, cls: ClassInfo) -> str | None:
        """Return ``threading.Thread`` (or ``Timer``, ``Process``) if
        ``cls`` subclasses it.
        """
        return self._external_base(cls, THREAD_LIKE, self._thread_base)

    def pool_base(self, cls: ClassInfo) -> str | None:
        """Return ``concurrent.futures.ThreadPoolExecutor`` (or another pool
        class) if ``cls`` subclasses it.
        """
        return self._external_base(cls, POOL_CLASSES, self._pool_base)

    def celery_base(self, cls: ClassInfo) -> bool:
        """Whether ``cls`` subclasses ``celery.Celery``."""
        return self._external_base(cls, (CELERY,), self._celery_base) is not None

    def _external_base(
        self,
        cls: ClassInfo,
        names: Container[str],
        cache: dict[int, str | None],
    ) -> str | None:
        key = id(cls)
        if key in cache:
            return cache[key]
        cache[key] = None
        found: str | None = None
        for expr in cls.node.bases:
            value = self.resolve(expr, cls.scope)
            if isinstance(value, Ext) and not value.instance and value.name in names:
                found = value.name
            elif isinstance(value, ClassInfo) and value is not cls:
                found = self._external_base(value, names, cache)
            if found:
                break
        cache[key] = found
        return found


def _returned_exprs(node: FunctionNode) -> Iterator[ast.expr]:
    """The values a function's own ``return`` statements give, not those of
    the functions and classes it defines.
    """
    if isinstance(node, ast.Lambda):
        yield node.body
        return
    # Statements, and the handlers and cases holding them, in order.
    blocks = (ast.stmt, ast.excepthandler, ast.match_case)
    todo: list[ast.AST] = list(node.body)
    while todo:
        sub = todo.pop(0)
        if isinstance(sub, ast.Return):
            if sub.value is not None:
                yield sub.value
        elif not isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(c for c in ast.iter_child_nodes(sub) if isinstance(c, blocks))


def _target_names(target: ast.expr) -> Iterable[ast.Name]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node


def _rebinds(stmt: ast.stmt) -> Iterator[str]:
    """Names a simple statement binds, replacing their earlier values."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield stmt.name
    elif isinstance(stmt, ast.Import):
        for alias in stmt.names:
            yield alias.asname or alias.name.partition(".")[0]
    elif isinstance(stmt, ast.ImportFrom):
        for alias in stmt.names:
            if alias.name != "*":
                yield alias.asname or alias.name
    elif isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Name):
                yield target.id
            elif isinstance(target, (ast.Tuple, ast.List)):
                targets.extend(target.elts)
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        if isinstance(stmt.target, ast.Name):
            yield stmt.target.id


class _Builder:
    """Create the scopes, functions and classes of one module."""

    def __init__(self, project: Project, module: ModuleInfo) -> None:
        self.project = project
        self.module = module

    def build(self) -> None:
        scope = self.module.scope
        for stmt in self.module.tree.body:
            self.stmt(stmt, scope, self.module.name, None, None)
            for name in _rebinds(stmt):
                # Run whenever the module is: it replaces earlier bindings.
                bindings = scope.bindings.get(name)
                if bindings:
                    scope.live[name] = len(bindings) - 1

    def body(
        self,
        stmts: list[ast.stmt],
        scope: Scope,
        prefix: str,
        cls: ClassInfo | None,
        self_name: tuple[str, ClassInfo] | None,
    ) -> None:
        for stmt in stmts:
            self.stmt(stmt, scope, prefix, cls, self_name)

    def bind(
        self, name: str, binding: Binding, scope: Scope, cls: ClassInfo | None
    ) -> None:
        if cls is not None:
            cls.attrs.setdefault(name, []).append(binding)
        else:
            scope.bind(name, binding)

    def assign(
        self,
        target: ast.expr,
        value: ast.expr | None,
        scope: Scope,
        cls: ClassInfo | None,
        self_name: tuple[str, ClassInfo] | None,
    ) -> None:
        if isinstance(target, ast.Name):
            binding: Binding = (
                AssignBinding(value, scope) if value is not None else FixedBinding(None)
            )
            self.bind(target.id, binding, scope, cls)
        elif isinstance(target, ast.Attribute):
            # ``self.pool = ThreadPool()`` types ``self.pool`` in every method.
            if (
                self_name is not None
                and value is not None
                and isinstance(target.value, ast.Name)
                and target.value.id == self_name[0]
            ):
                self_name[1].attrs.setdefault(target.attr, []).append(
                    AssignBinding(value, scope)
                )
        elif (
            isinstance(target, (ast.Tuple, ast.List))
            and isinstance(value, (ast.Tuple, ast.List))
            and len(target.elts) == len(value.elts)
            and not any(isinstance(e, ast.Starred) for e in target.elts)
            and not any(isinstance(e, ast.Starred) for e in value.elts)
        ):
            # ``req, sess = request, session`` binds each name to its value.
            for sub, item in zip(target.elts, value.elts, strict=True):
                self.assign(sub, item, scope, cls, self_name)
        elif isinstance(target, (ast.Tuple, ast.List, ast.Starred)):
            for name in _target_names(target):
                self.bind(name.id, FixedBinding(None), scope, cls)

    def stmt(
        self,
        node: ast.stmt,
        scope: Scope,
        prefix: str,
        cls: ClassInfo | None,
        self_name: tuple[str, ClassInfo] | None,
    ) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(node, scope, prefix, cls)
        elif isinstance(node, ast.ClassDef):
            qual = f"{prefix}.{node.name}"
            info = ClassInfo(node, self.module, qual, scope)
            self.project.classes.append(info)
            if cls is not None:
                cls.nested[node.name] = info
            else:
                scope.bind(node.name, FixedBinding(info))
            self.body(node.body, scope, qual, info, None)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    b = ImportBinding(alias.name, 0, None)
                    self.bind(alias.asname, b, scope, cls)
                else:
                    top = alias.name.partition(".")[0]
                    self.bind(top, ImportBinding(top, 0, None), scope, cls)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                b = ImportBinding(node.module or "", node.level, alias.name)
                if alias.name == "*":
                    b.attr = None
                    self.module.star_imports.append(b)
                else:
                    self.bind(alias.asname or alias.name, b, scope, cls)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                self.assign(target, node.value, scope, cls, self_name)
        elif isinstance(node, ast.AnnAssign):
            self.assign(node.target, node.value, scope, cls, self_name)
        elif isinstance(node, ast.AugAssign):
            self.assign(node.target, None, scope, cls, self_name)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            for name in _target_names(node.target):
                self.bind(name.id, FixedBinding(None), scope, cls)
            self.body(node.body, scope, prefix, cls, self_name)
            self.body(node.orelse, scope, prefix, cls, self_name)
        elif isinstance(node, (ast.While, ast.If)):
            # Each elif is an if nested in the previous one's orelse: follow
            # the chain in a loop, as recursing would exhaust the recursion
            # limit on long generated dispatchers.
            branch: ast.While | ast.If = node
            while True:
                self.walrus(branch.test, scope, cls)
                self.body(branch.body, scope, prefix, cls, self_name)
                orelse = branch.orelse
                if len(orelse) == 1 and isinstance(orelse[0], ast.If):
                    branch = orelse[0]
                    continue
                self.body(orelse, scope, prefix, cls, self_name)
                break
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, item.context_expr, scope, cls, None)
            self.body(node.body, scope, prefix, cls, self_name)
        elif isinstance(node, TRY_NODES):
            self.body(node.body, scope, prefix, cls, self_name)
            for handler in node.handlers:
                if handler.name:
                    self.bind(handler.name, FixedBinding(None), scope, cls)
                self.body(handler.body, scope, prefix, cls, self_name)
            self.body(node.orelse, scope, prefix, cls, self_name)
            self.body(node.finalbody, scope, prefix, cls, self_name)
        elif isinstance(node, ast.Match):
            for case in node.cases:
                for sub in ast.walk(case.pattern):
                    captured = getattr(sub, "name", None)
                    if isinstance(captured, str):
                        self.bind(captured, FixedBinding(None), scope, cls)
                self.body(case.body, scope, prefix, cls, self_name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            # Only a function's own names count: ``global`` in a module or
            # class body changes nothing here, and a module naming its own
            # globals would make lookup() loop.
            if cls is None and scope.parent is not None:
                names = (
                    scope.global_names
                    if isinstance(node, ast.Global)
                    else scope.nonlocal_names
                )
                names.update(node.names)

    def walrus(self, test: ast.expr, scope: Scope, cls: ClassInfo | None) -> None:
        """Bind the names of ``if (req := request):`` style tests."""
        for sub in ast.walk(test):
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                self.bind(sub.target.id, AssignBinding(sub.value, scope), scope, cls)

    def function(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: Scope,
        prefix: str,
        cls: ClassInfo | None,
    ) -> None:
        qual = f"{prefix}.{node.name}"
        local = Scope(self.module, scope)
        info = FunctionInfo(node, self.module, qual, local, cls)
        local.owner = info
        self.project.functions.append(info)
        self.project.func_by_node[id(node)] = info
        if cls is not None:
            # ``@name.setter`` and ``@name.deleter`` leave ``name`` the
            # property, whose getter runs when it is read.
            if node.name not in cls.methods or not any(
                isinstance(d, ast.Attribute)
                and d.attr in ("setter", "deleter")
                and isinstance(d.value, ast.Name)
                and d.value.id == node.name
                for d in node.decorator_list
            ):
                cls.methods[node.name] = info
        else:
            scope.bind(node.name, FixedBinding(info))
        args = node.args
        params = [*args.posonlyargs, *args.args]
        self_name: tuple[str, ClassInfo] | None = None
        decorators = {
            d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")
            for d in node.decorator_list
        }
        if cls is not None and params and "staticmethod" not in decorators:
            first = params.pop(0).arg
            if "classmethod" in decorators or node.name == "__new__":
                local.bind(first, FixedBinding(cls))
            else:
                local.bind(first, FixedBinding(Inst(cls)))
                self_name = (first, cls)
        for arg in [*params, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                local.bind(arg.arg, FixedBinding(None))
        self.body(node.body, local, qual, None, self_name)


def specialize(
    wrapper: FunctionInfo, decorator: FunctionInfo, param: str, value: FunctionInfo
) -> FunctionInfo:
    """A copy of ``wrapper``, defined in ``decorator``, in which the
    decorator's parameter ``param`` is ``value``: what calling a function
    decorated with ``decorator`` runs.
    """
    outer = decorator.scope.copy(decorator.scope.parent)
    outer.bindings[param] = [FixedBinding(value)]
    local = wrapper.scope.copy(outer)
    info = FunctionInfo(wrapper.node, wrapper.module, wrapper.qualname, local, None)
    local.owner = info
    return info


def body_of(func: FunctionInfo) -> FunctionInfo:
    """The undecorated body of a function with project decorators."""
    info = FunctionInfo(func.node, func.module, func.qualname, func.scope, func.cls)
    info.body_of = func
    return info


def lambda_function(
    project: Project, node: ast.Lambda, scope: Scope, qualname: str
) -> FunctionInfo:
    """Wrap a lambda given as a background target in a :class:`FunctionInfo`."""
    local = Scope(scope.module, scope)
    info = FunctionInfo(node, scope.module, qualname, local, None)
    local.owner = scope.owner
    args = node.args
    for arg in [
        *args.posonlyargs,
        *args.args,
        *args.kwonlyargs,
        args.vararg,
        args.kwarg,
    ]:
        if arg is not None:
            local.bind(arg.arg, FixedBinding(None))
    return info
