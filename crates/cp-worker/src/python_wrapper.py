# Run by the worker as `python3 -I -c <this>` with a JSON request on stdin:
#   {"mode": "code", "code": "...", "allowed": [...], "blocked": [...]}
#   {"mode": "class", "class": "module:Class", "init": {...}, "arguments": {...}, "python_path": [...]}
# Everything written, errors included, goes to stdout. Exit 3: the code was refused before
# running; 4: the class could not be loaded; 1: the code or the class raised.
import ast
import builtins
import json
import os
import sys

os.dup2(1, 2)
request = json.load(sys.stdin)
SOURCE = "<run_python>"


def refusal(name, allowed, blocked):
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    for b in blocked:
        if b in prefixes:
            return "import of '%s' is refused: '%s' is in blocked_imports" % (name, b)
    if allowed and not any(a in prefixes for a in allowed):
        return "import of '%s' is refused: it is not in allowed_imports" % name
    return None


def imported(tree):
    """Every module the code names in an import, wherever it is; None for one it computes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield None
                continue
            yield node.module
            for alias in node.names:
                if alias.name != "*":
                    yield node.module + "." + alias.name
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in ("__import__", "import_module"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield arg.value
                else:
                    yield None
        elif isinstance(node, (ast.Name, ast.Attribute)):
            # importlib's and __import__'s functions used without being called directly
            # (`f = importlib.import_module`) compute what they import.
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in ("__import__", "import_module", "__loader__", "__spec__"):
                yield None


def in_module(namespace):
    """Whether `namespace` is an imported module's own (not the run's code)."""
    if namespace is scope:
        return False
    name = namespace.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return module is not None and name != "__main__" and getattr(module, "__dict__", None) is namespace


def run_code():
    global scope
    scope = {"__name__": "__main__", "__builtins__": builtins}
    allowed, blocked = request.get("allowed") or [], request.get("blocked") or []
    try:
        tree = ast.parse(request["code"], SOURCE)
    except SyntaxError as e:
        print("SyntaxError: %s (line %s)" % (e.msg, e.lineno))
        sys.exit(3)
    if allowed or blocked:
        for name in imported(tree):
            why = (
                "an import whose module is computed at run time cannot be checked against the "
                "skill's import lists" if name is None else refusal(name, allowed, blocked)
            )
            if why:
                print(why)
                sys.exit(3)
        # The same lists at run time, for imports the code makes itself.
        original = builtins.__import__

        def guarded(name, globals=None, locals=None, fromlist=(), level=0):
            # Code the run wrote (its own, or strings it exec'd); not the modules it imports,
            # whose code runs in their own module's namespace. The lists keep ordinary code
            # from importing what they refuse; the sandbox, not this, is the boundary.
            frame = sys._getframe(1)
            if not in_module(frame.f_globals):
                why = refusal(name, allowed, blocked) if level == 0 else "relative imports are refused"
                if why:
                    raise ImportError(why)
            return original(name, globals, locals, fromlist, level)

        builtins.__import__ = guarded
    exec(compile(tree, SOURCE, "exec"), scope)


def run_class():
    module, _, cls = request["class"].partition(":")
    for d in reversed(request.get("python_path") or []):
        sys.path.insert(0, d)
    try:
        import importlib

        target = getattr(importlib.import_module(module), cls)
    except Exception as e:
        print("cannot load custom_class '%s': %s: %s" % (request["class"], type(e).__name__, e))
        sys.exit(4)
    result = target(**(request.get("init") or {})).run(**(request.get("arguments") or {}))
    if result is not None:
        print(result if isinstance(result, str) else json.dumps(result, default=str))


(run_code if request["mode"] == "code" else run_class)()
