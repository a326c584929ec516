# suanli_test(tests/x/y_test.cc LIBS lib...) adds one GoogleTest binary named after the file
# (x_y_test) and registers its tests with CTest. Adding a test is one line.
function(suanli_test src)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR}/tests ${CMAKE_CURRENT_SOURCE_DIR}/${src})
  string(REGEX REPLACE "\\.cc$" "" name ${rel})
  string(REPLACE "/" "_" name ${name})
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gmock GTest::gtest_main)
  # Each test is named <binary>.<Suite>.<Test>, so that `ctest -R <binary>` selects a binary.
  gtest_discover_tests(${name} TEST_PREFIX "${name}." DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 900)
endfunction()
include(GoogleTest)
