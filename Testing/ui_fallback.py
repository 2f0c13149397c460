"""Load a Slicer module's Qt Designer ``.ui`` file with plain Qt (PySide6 ``QUiLoader``), offscreen, without Slicer.

Slicer / CTK / MRML widget classes (``qMRMLNodeComboBox``, ``ctkCollapsibleButton``, ...) do not exist outside Slicer;
:func:`translate_ui` replaces each by a Qt class — from :data:`CLASS_MAP` when listed (chosen to look alike, e.g. a
collapsible button becomes a ``QGroupBox`` whose title is the button text), otherwise the Qt base class the ``.ui``
declares in its ``<customwidgets>`` section (``<extends>``, followed until a Qt class is reached). Properties the Qt
class does not have are dropped (dynamic ``stdset="0"`` properties such as ``SlicerParameterName`` are kept), and so are
``<connections>`` (they use MRML signatures such as ``setMRMLScene(vtkMRMLScene*)``). Object names and the widget
tree are unchanged, so tests can check that every widget a module file uses exists, and scripts can render the panel.

Used by ``Testing/test_consistency.py`` and ``scripts/render_panels.py``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

#: Slicer/CTK/MRML class -> (Qt class, {property renames}); classes not listed fall back to their declared base
CLASS_MAP: dict[str, tuple[str, dict[str, str]]] = {
    "qMRMLWidget": ("QWidget", {}),
    "qSlicerWidget": ("QWidget", {}),
    "ctkCollapsibleButton": ("QGroupBox", {"text": "title"}),
    "ctkCollapsibleGroupBox": ("QGroupBox", {}),
    "qMRMLNodeComboBox": ("QComboBox", {}),
    "qMRMLSegmentSelectorWidget": ("QComboBox", {}),
    "ctkComboBox": ("QComboBox", {}),
    "ctkPathLineEdit": ("QLineEdit", {}),
    "qMRMLTableView": ("QTableView", {}),
    "ctkSliderWidget": ("QDoubleSpinBox", {}),
    "qMRMLSliderWidget": ("QDoubleSpinBox", {}),
    "ctkDoubleSpinBox": ("QDoubleSpinBox", {}),
    "qMRMLSpinBox": ("QDoubleSpinBox", {}),
    "ctkCheckBox": ("QCheckBox", {}),
    "ctkMenuButton": ("QPushButton", {}),
    "ctkCheckablePushButton": ("QPushButton", {}),
    "ctkDirectoryButton": ("QPushButton", {}),
    "ctkColorPickerButton": ("QPushButton", {}),
    "qSlicerMarkupsPlaceWidget": ("QWidget", {}),
    "qSlicerSimpleMarkupsWidget": ("QWidget", {}),
}

_APP = None


def _qt_widgets():
    from PySide6 import QtWidgets

    return QtWidgets


def ensure_app():
    """The process' QApplication (created offscreen if there is none)."""
    global _APP
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = _qt_widgets()
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication([])
    _APP = app
    return app


def _is_qt_class(name: str) -> bool:
    if name in ("Line",):  # Designer's name for a QFrame line
        return True
    QtWidgets = _qt_widgets()
    cls = getattr(QtWidgets, name, None)
    return isinstance(cls, type) and issubclass(cls, QtWidgets.QWidget)


def _declared_bases(root: ET.Element) -> dict[str, str]:
    out = {}
    section = root.find("customwidgets")
    if section is not None:
        for cw in section.findall("customwidget"):
            cls, ext = cw.findtext("class"), cw.findtext("extends")
            if cls and ext:
                out[cls.strip()] = ext.strip()
    return out


def resolve_class(name: str, declared: dict[str, str], mapping: dict | None = None) -> tuple[str, dict[str, str]]:
    """Qt class (and property renames) that stands in for ``name``."""
    mapping = CLASS_MAP if mapping is None else mapping
    seen = set()
    current = name
    while True:
        if _is_qt_class(current):
            return current, {}
        if current in mapping:
            return mapping[current]
        if current in seen or current not in declared:
            return "QWidget", {}
        seen.add(current)
        current = declared[current]


def _has_property(qt_class: str, prop: str) -> bool:
    QtWidgets = _qt_widgets()
    if qt_class == "Line":
        qt_class = "QFrame"
    cls = getattr(QtWidgets, qt_class, None)
    if cls is None:
        return False
    return cls.staticMetaObject.indexOfProperty(prop) >= 0


def translate_ui(xml_text: str, mapping: dict | None = None) -> tuple[str, dict[str, str]]:
    """Rewrite a Slicer ``.ui`` document for plain Qt.

    Returns
    -------
    xml : str
        The translated document.
    replaced : dict
        Object name -> ``"OriginalClass->QtClass"`` for every replaced widget.
    """
    root = ET.fromstring(xml_text)
    declared = _declared_bases(root)
    replaced = {}
    for w in root.iter("widget"):
        original = w.get("class", "QWidget")
        qt_class, renames = resolve_class(original, declared, mapping)
        if qt_class != original:
            w.set("class", qt_class)
            replaced[w.get("name", "")] = f"{original}->{qt_class}"
        for p in list(w.findall("property")):
            name = p.get("name", "")
            if p.get("stdset") == "0":
                continue
            if name in renames:
                p.set("name", renames[name])
                name = renames[name]
            if not _has_property(qt_class, name):
                w.remove(p)
    for tag in ("customwidgets", "connections"):
        section = root.find(tag)
        if section is not None:
            root.remove(section)
    return ET.tostring(root, encoding="unicode"), replaced


def load_ui_offscreen(path: str | os.PathLike, mapping: dict | None = None):
    """Load the ``.ui`` file at ``path`` into a QWidget (offscreen QApplication, Slicer classes replaced).

    Raises
    ------
    RuntimeError
        If Qt cannot build the widget.
    """
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtUiTools import QUiLoader

    ensure_app()
    text, _ = translate_ui(Path(path).read_text(encoding="utf-8"), mapping)
    buffer = QBuffer()
    buffer.setData(QByteArray(text.encode("utf-8")))
    buffer.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    widget = loader.load(buffer)
    buffer.close()
    if widget is None:
        raise RuntimeError(f"Qt could not load {path}: {loader.errorString()}")
    return widget
