# shellcheck shell=bash
# Shared helpers for the docker/ scripts. Sourced, not executed.

# Under set -e a failing command would end the script silently: name it.
trap 'echo "error: $(basename "$0") line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# Print an error that says what to do, then stop.
die() {
    echo "error: $*" >&2
    exit 1
}

# debian_mirror: print the Debian archive URI this host already uses for apt.
# We never hard-code a mirror: a host behind a proxy, an air-gapped host with a
# local mirror, or a snapshot pin all keep working because we reuse whatever
# the host's apt is configured with. Security/update archives are skipped: we
# want the main archive, which carries every suite (bookworm, trixie, ...).
debian_mirror() {
    local uri
    # deb822 sources (Debian 12+): "URIs: http://host/debian" in a stanza whose
    # "Suites:" names the release itself (not only -security or -updates).
    uri=$(awk '
        FNR == 1 { if (u != "" && s) { print u; exit } u = ""; s = 0 }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
        tolower($1) == "uris:" { u = $2 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) s = 1 }
        END { if (u != "" && s) print u }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        # One-line format: "deb [opts] URI SUITE COMPONENTS..."
        uri=$(awk '
            $1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) !~ /-/) { print $i; exit }
            }
        ' /etc/apt/sources.list | head -n1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; configure apt first"
    echo "${uri%/}"
}

# debian_security_mirror: print the host's Debian security archive URI, or
# nothing when apt has none configured.
debian_security_mirror() {
    {
        awk '
            FNR == 1 { u = "" }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { u = ""; next }
            tolower($1) == "uris:" { u = $2 }
            tolower($1) == "suites:" && u != "" { for (i = 2; i <= NF; i++) if ($i ~ /-security$/) { print u; exit } }
        ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
        awk '$1 == "deb" && $0 ~ /-security/ {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                print $i; exit }' /etc/apt/sources.list 2>/dev/null || true
    } | head -n1 | sed 's:/*$::' || true
}

# docker_answers: true when a Docker daemon responds to the CLI on PATH.
docker_answers() {
    docker info >/dev/null 2>&1
}

# trixie_download DIR PACKAGE...: download Debian trixie's .debs of PACKAGEs into DIR
# (apt-get download: no dependencies, nothing installed). A throw-away apt
# configuration points at this host's own mirror, so the host's apt sources,
# lists and caches are not touched. Exits 3 when the mirror has no trixie (or
# not these packages): callers that can do without them tell that apart.
trixie_download() {
    local dest=$1 mirror keyring work
    shift
    mirror=$(debian_mirror)
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -r "$keyring" ] || { apt-get update -qq; apt-get install -y -qq debian-archive-keyring >/dev/null; }
    work=$(mktemp -d)
    chmod 755 "$work"  # apt drops to user _apt for downloads
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dest"
    mkdir "$work/deb"
    chown _apt "$work/deb" 2>/dev/null || true  # apt downloads as _apt where that user exists
    echo "deb [signed-by=$keyring] $mirror trixie main" >"$work/trixie.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$work/trixie.list" -o "Dir::Etc::SourceParts=-"
                    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
                    -o "APT::Get::List-Cleanup=0")
    if ! apt-get "${apt_opts[@]}" update -qq; then
        rm -rf "$work"
        echo "error: apt could not read trixie from $mirror; check the host's apt sources and network" >&2
        exit 3
    fi
    if ! (cd "$work/deb" && apt-get "${apt_opts[@]}" download "$@" >&2); then
        rm -rf "$work"
        echo "error: apt-get download $* (trixie) failed from $mirror" >&2
        exit 3
    fi
    mv "$work"/deb/*.deb "$dest"/
    rm -rf "$work"
}
