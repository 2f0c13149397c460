# Stand-in Slicer build configuration (Testing/test_cmake_build.py): enough of Slicer's CMake API to configure and build
# the extension with Ninja without Slicer. The copy rules mirror what Slicer's macros do with listed files: every
# scripted module (slicerMacroBuildScriptedModule, no WITH_SUBDIR) and ctkMacroCompilePythonScript copy each listed
# script and resource to <build>/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/<listed path> with one custom command per file,
# so two modules listing the same relative path make Ninja fail with "multiple rules generate ...".
set(Slicer_VERSION "5.10.0")
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 10)
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/Empty.cmake")
set(Slicer_FOUND TRUE)
