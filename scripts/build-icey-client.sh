#!/usr/bin/env bash
# Build the icey C++ Symple client (its `sympleconsole` sample) from a checkout
# of https://github.com/nilstate/icey, offline, against Debian/Ubuntu packages.
#
#   bash scripts/build-icey-client.sh SOURCE_DIR BUILD_DIR
#
# SOURCE_DIR is an icey checkout (git clone https://github.com/nilstate/icey)
# or a bare clone of it (git clone --bare ...), whose HEAD is then exported
# into BUILD_DIR/source without data/ (sample media, not needed);
# BUILD_DIR receives the build.  Nothing is downloaded: icey's USE_SYSTEM_DEPS
# switch makes it use system libuv, zlib, OpenSSL and nlohmann-json, and llhttp
# is compiled from the sources Debian ships in node-llhttp (it has no -dev
# package).  Only the modules the Symple client needs are built.
#
# Packages (Debian 12 names):
#   apt-get install cmake ninja-build g++ pkg-config libssl-dev libuv1-dev \
#       zlib1g-dev nlohmann-json3-dev libminizip-dev node-llhttp
#
# On success the last line printed is the path of the sympleconsole binary;
# point SYMPLE_ICEY_CONSOLE at it to run tests/test_icey_interop.py.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 SOURCE_DIR BUILD_DIR" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
build=$(cd "$2" && pwd)
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

if [ ! -d "$src/src" ] && git --git-dir="$src" rev-parse --verify -q HEAD >/dev/null; then
    export_dir="$build/source"
    rm -rf "$export_dir"
    mkdir -p "$export_dir"
    paths=$(git --git-dir="$src" ls-tree --name-only HEAD | grep -vx data || true)
    # shellcheck disable=SC2086  # one argument per top-level path
    git --git-dir="$src" archive HEAD -- $paths | tar -x -C "$export_dir"
    src="$export_dir"
fi
if [ ! -f "$src/src/symple/CMakeLists.txt" ]; then
    echo "$src does not look like an icey checkout (no src/symple)" >&2
    exit 2
fi

missing=()
for tool in cmake ninja g++ pkg-config ar; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
for pc in libuv openssl zlib nlohmann_json; do
    pkg-config --exists "$pc" 2>/dev/null || missing+=("$pc (pkg-config)")
done
if [ ${#missing[@]} -ne 0 ]; then
    echo "missing: ${missing[*]}" >&2
    echo "install: apt-get install cmake ninja-build g++ pkg-config libssl-dev" \
         "libuv1-dev zlib1g-dev nlohmann-json3-dev libminizip-dev node-llhttp" >&2
    exit 1
fi

# llhttp: use an installed pkg-config package if there is one, otherwise
# build a static library from the C sources of Debian's node-llhttp.
pc_dir="$build/pkgconfig"
mkdir -p "$pc_dir"
if ! pkg-config --exists llhttp 2>/dev/null; then
    llsrc=/usr/share/llhttp
    llinc=/usr/share/include/llhttp
    if [ ! -f "$llsrc/llhttp.c" ] || [ ! -f "$llinc/llhttp.h" ]; then
        echo "llhttp not found: install node-llhttp (or an llhttp pkg-config package)" >&2
        exit 1
    fi
    lldir="$build/llhttp"
    mkdir -p "$lldir/include" "$lldir/lib"
    cp "$llinc/llhttp.h" "$lldir/include/"
    for f in api http llhttp; do
        cc -O2 -fPIC -I"$lldir/include" -c "$llsrc/$f.c" -o "$lldir/$f.o"
    done
    ar rcs "$lldir/lib/libllhttp.a" "$lldir/api.o" "$lldir/http.o" "$lldir/llhttp.o"
    cat > "$pc_dir/llhttp.pc" <<PC
prefix=$lldir
Name: llhttp
Description: llhttp built from the node-llhttp sources
Version: 8
Cflags: -I\${prefix}/include
Libs: -L\${prefix}/lib -lllhttp
PC
fi
export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# Every module the Symple client does not use is switched off.
off=()
for mod in archo av graft pacm sched speech stun turn vision webrtc; do
    off+=("-DBUILD_MODULE_$mod=OFF")
done

cmake -S "$src" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DUSE_SYSTEM_DEPS=ON \
    -DBUILD_APPLICATIONS=OFF -DBUILD_TESTS=OFF -DBUILD_SAMPLES=OFF \
    -DBUILD_SAMPLES_symple=ON \
    -DWITH_FFMPEG=OFF -DWITH_OPENCV=OFF -DWITH_LIBDATACHANNEL=OFF \
    -DENABLE_NATIVE_ARCH=OFF -DENABLE_LTO=OFF \
    "${off[@]}"
cmake --build "$build" --target sympleconsole -j "$jobs"

binary=$(find "$build" -type f -name sympleconsole -perm -u+x | head -n 1)
if [ -z "$binary" ]; then
    echo "build finished but no sympleconsole binary was found under $build" >&2
    exit 1
fi
echo "$binary"
