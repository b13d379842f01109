"""No public name means two things (issue 13): a name defined in two modules of ``asyncreceive`` for
different things (the offer's ``offer_paths`` TLV field 16 and the bLIP-66 ``offer_paths`` message 75542
were both ``OFFER_PATHS``; ``encrypted_recipient_data`` was 4 in an onion message and 10 in a payment onion)
reads the same at every use and is easy to import from the wrong place.  A name counts as defined in a
module when that module assigns it, or defines a function or class of that name, at top level (its source,
read with ``ast``): names a module imports from another are not its own.  A value that is the same thing in
two places is imported, not defined twice."""

import ast
import importlib
import inspect
import pkgutil
from collections import defaultdict

import asyncreceive


def modules():
    """Every module of the package (``__main__`` runs the plugin when imported: it defines nothing)."""
    for info in pkgutil.walk_packages(asyncreceive.__path__, "asyncreceive."):
        if not info.name.endswith(".__main__"):
            yield importlib.import_module(info.name)


def assigned_names(target):
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from assigned_names(element)


def top_level_names(module):
    """Public names ``module`` defines at top level (assignments, functions, classes)."""
    names = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(assigned_names(target))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            names.update(assigned_names(node.target))
    return {name for name in names if not name.startswith("_")}


def definitions():
    """name -> [(module name, value)] for every public name defined in some module."""
    found = defaultdict(list)
    for module in modules():
        for name in sorted(top_level_names(module)):
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isroutine(value)) and value.__module__ != module.__name__:
                continue  # a function or class defined elsewhere, bound to a second name here: not ours
            found[name].append((module.__name__, value))
    return found


def test_top_level_names_finds_assignments_defs_and_classes_only():
    import asyncreceive.wire.bolt12.fields as fields
    names = top_level_names(fields)
    assert {"TLV_OFFER_PATHS", "feature_bits", "Value"} <= names
    assert not any(name.startswith("_") for name in names)
    assert "List" not in names and "Table" not in names  # imported, not defined there


def test_no_public_name_is_defined_in_two_modules():
    clashes = []
    for name, places in sorted(definitions().items()):
        if len(places) > 1:
            clashes.append(f"{name}: " + ", ".join(f"{module}={value!r}" for module, value in places))
    assert clashes == [], "public names defined in more than one module:\n" + "\n".join(clashes)
