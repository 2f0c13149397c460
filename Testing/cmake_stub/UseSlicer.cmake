# Stand-in macros of Slicer / CTK (see SlicerConfig.cmake).

function(_stub_copy_files target destination)
  set(outputs)
  foreach(file ${ARGN})
    if(IS_ABSOLUTE "${file}")
      set(source "${file}")
      get_filename_component(relative "${file}" NAME)
    else()
      set(source "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
      set(relative "${file}")
    endif()
    if(NOT EXISTS "${source}")
      message(FATAL_ERROR "${target}: given nonexistent file '${file}'")
    endif()
    set(output "${destination}/${relative}")
    add_custom_command(
      OUTPUT "${output}"
      COMMAND ${CMAKE_COMMAND} -E copy "${source}" "${output}"
      DEPENDS "${source}"
      COMMENT "${target}: ${relative}"
      VERBATIM)
    list(APPEND outputs "${output}")
  endforeach()
  add_custom_target(${target} ALL DEPENDS ${outputs})
endfunction()

function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "" "TARGET_NAME;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  _stub_copy_files(${MY_TARGET_NAME}PythonFiles "${MY_DESTINATION_DIR}" ${MY_SCRIPTS} ${MY_RESOURCES})
endfunction()

function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT MY_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_NAME}
    SCRIPTS ${MY_SCRIPTS}
    RESOURCES ${MY_RESOURCES}
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
endfunction()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest: no ${MY_SCRIPT}")
  endif()
endfunction()
