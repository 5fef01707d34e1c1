#!/usr/bin/env bash
# Builds target/debian/authgate_<version>_<arch>.deb with plain dpkg-deb (SPEC §18).
#
# Usage: bash packaging/deb.sh [--binary PATH]
#   Default: `cargo build --release --locked` and package target/release/authgate.
#   AUTHGATE_DEB_PROFILE=debug (or any cargo profile) builds and packages that profile.
#   --binary PATH (or AUTHGATE_DEB_BINARY=PATH) packages an already-built binary and
#   builds nothing (the tests use it with the debug binary).
#   AUTHGATE_DEB_MAINTAINER overrides the Maintainer field; AUTHGATE_DEB_OUT_DIR the
#   output folder (default target/debian).
#
# Why not cargo-deb: it is one more tool to install from crates.io, and here the layout,
# the conffile list and the two tiny maintainer scripts are spelled out in one file.
#
# What the package does NOT do: it has no postinst, so installing it enables and starts
# nothing. The admin edits /etc/authgate/gateway.toml, then `systemctl enable --now
# authgate`. The prerm only stops a running unit when the package is removed, and the
# postrm makes systemd forget the removed unit.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"

fail() { echo "deb.sh: $*" >&2; exit 1; }

binary=${AUTHGATE_DEB_BINARY:-}
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) [[ $# -ge 2 ]] || fail "--binary needs a path"; binary=$2; shift 2 ;;
        --binary=*) binary=${1#--binary=}; shift ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument '$1' (see --help)" ;;
    esac
done

for tool in dpkg-deb dpkg gzip strip; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (apt-get install dpkg binutils gzip)"
done

# --- the binary ----------------------------------------------------------------------
if [[ -z $binary ]]; then
    profile=${AUTHGATE_DEB_PROFILE:-release}
    [[ $profile == debug ]] && profile=dev    # cargo's name for target/debug
    echo "deb.sh: cargo build --profile $profile --locked --bin authgate"
    cargo build --profile "$profile" --locked --bin authgate
    dir=$profile
    [[ $profile == dev ]] && dir=debug
    binary="$repo/target/$dir/authgate"
fi
[[ -f $binary && -x $binary ]] || fail "binary $binary does not exist or is not executable"

# --- version and architecture --------------------------------------------------------
# The [package] version of Cargo.toml. A SemVer pre-release (1.2.0-rc.1) becomes
# 1.2.0~rc.1, which Debian sorts before 1.2.0; a '-' would read as a Debian revision.
version=$(awk '/^\[/ { section = $0 } section == "[package]" && $1 == "version" {
    gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
[[ -n $version ]] || fail "no version in the [package] table of Cargo.toml"
version=${version//-/\~}
arch=$(dpkg --print-architecture)

out_dir=${AUTHGATE_DEB_OUT_DIR:-$repo/target/debian}
deb="$out_dir/authgate_${version}_${arch}.deb"
stage="$out_dir/authgate_${version}_${arch}"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$out_dir"

# --- files ---------------------------------------------------------------------------
install -D -m 0755 "$binary" "$stage/usr/bin/authgate"
strip --strip-unneeded "$stage/usr/bin/authgate"
bin="$stage/usr/bin/authgate"

# The unit as in systemd/, with the binary where the package puts it.
install -d -m 0755 "$stage/lib/systemd/system"
sed 's#/usr/local/bin/authgate#/usr/bin/authgate#g' systemd/authgate.service \
    >"$stage/lib/systemd/system/authgate.service"
chmod 0644 "$stage/lib/systemd/system/authgate.service"
grep -q '/usr/local/bin' "$stage/lib/systemd/system/authgate.service" \
    && fail "the packaged unit still names /usr/local/bin"

install -D -m 0644 packaging/gateway.toml "$stage/etc/authgate/gateway.toml"

# Man page and completions come from the binary itself (clap_mangen, clap_complete).
install -d -m 0755 "$stage/usr/share/man/man1"
"$bin" man | gzip -9n >"$stage/usr/share/man/man1/authgate.1.gz"
install -d -m 0755 "$stage/usr/share/bash-completion/completions" \
    "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$stage/usr/share/bash-completion/completions/authgate"
"$bin" completions zsh >"$stage/usr/share/zsh/vendor-completions/_authgate"
"$bin" completions fish >"$stage/usr/share/fish/vendor_completions.d/authgate.fish"

install -d -m 0755 "$stage/usr/share/doc/authgate"
cat >"$stage/usr/share/doc/authgate/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: authgate

Files: *
Copyright: the authgate authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use
 this file except in compliance with the License. You may obtain a copy of the
 License at http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software distributed
 under the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR
 CONDITIONS OF ANY KIND, either express or implied. See the License for the
 specific language governing permissions and limitations under the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be found
 in /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "$stage/usr/share/doc/authgate/copyright"

# --- control files -------------------------------------------------------------------
# Shared-library dependencies as Debian computes them; dpkg-shlibdeps wants a
# debian/control, so it runs in a scratch directory with a minimal one.
depends=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    scratch=$(mktemp -d)
    mkdir "$scratch/debian"
    printf 'Source: authgate\n\nPackage: authgate\nArchitecture: any\n' >"$scratch/debian/control"
    if line=$(cd "$scratch" && dpkg-shlibdeps -O "$bin" 2>/dev/null); then
        depends=$(sed -n 's/^shlibs:Depends=//p' <<<"$line")
    fi
    rm -rf "$scratch"
fi
if [[ -z $depends ]]; then
    echo "deb.sh: dpkg-shlibdeps unavailable or failed (apt-get install dpkg-dev): Depends: libc6"
    depends="libc6"
fi

installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
maintainer=${AUTHGATE_DEB_MAINTAINER:-authgate maintainers <maintainers@authgate.invalid>}
cat >"$stage/DEBIAN/control" <<EOF
Package: authgate
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Section: net
Priority: optional
Description: authenticating reverse proxy and API gateway
 authgate answers /register, /login, token refresh, logout and JWKS itself
 (SQLite or PostgreSQL user store, Argon2id passwords, signed JWTs), checks
 the token on every request to a protected route and forwards it upstream
 with the caller's identity in a trusted header.
 .
 The systemd unit authgate.service is installed but neither enabled nor
 started: edit /etc/authgate/gateway.toml, then systemctl enable --now authgate.
EOF

printf '/etc/authgate/gateway.toml\n' >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Stop the service before its binary goes away; upgrades leave it running (the admin
# restarts it when ready).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop authgate.service >/dev/null 2>&1 || true
fi
EOF
cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
chmod 0755 "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "deb.sh: built $deb"
