# Cross-compiling for AArch64 on Debian: g++-aarch64-linux-gnu, with the
# arm64 libraries of Debian's multiarch packages (scripts/setup.sh installs
# both). The binaries run under qemu-aarch64 (scripts/check_aarch64.sh).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# Libraries and package files from the arm64 multiarch folders; headers and
# header-only packages' CMake files from /usr, shared by every architecture.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# libsimdjson-dev cannot be installed for two architectures at once (Debian
# 12): the arm64 library (libsimdjson14:arm64) gets a package file here.
# Once per run: CMake reads this file again for each try_compile, in a
# temporary binary folder.
if(NOT DEFINED ENV{SLM_AARCH64_PKGCONFIG})
  set(ENV{SLM_AARCH64_PKGCONFIG} ${CMAKE_BINARY_DIR}/aarch64-pkgconfig)
  file(WRITE $ENV{SLM_AARCH64_PKGCONFIG}/simdjson.pc "Name: simdjson\nDescription: simdjson, arm64\nVersion: 3.0.1\n"
       "Libs: -L$ENV{SLM_AARCH64_PKGCONFIG} -lsimdjson\nCflags:\n")
  file(CREATE_LINK /usr/lib/aarch64-linux-gnu/libsimdjson.so.14 $ENV{SLM_AARCH64_PKGCONFIG}/libsimdjson.so SYMBOLIC)
  set(ENV{PKG_CONFIG_LIBDIR} $ENV{SLM_AARCH64_PKGCONFIG}:/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
# The cross compiler searches its own include folder only: the shared
# headers come after it, the arm64 ones (cblas.h, ...) first.
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include/aarch64-linux-gnu -idirafter /usr/include")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-L$ENV{SLM_AARCH64_PKGCONFIG} -Wl,-rpath-link,/usr/lib/aarch64-linux-gnu:/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-L$ENV{SLM_AARCH64_PKGCONFIG} -Wl,-rpath-link,/usr/lib/aarch64-linux-gnu:/lib/aarch64-linux-gnu")
