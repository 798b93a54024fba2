#!/bin/sh
# install.sh: installs the offsite overlay (the `overlay/` folder beside this script) on a firmware without
# dpkg: the files, the system user `offsite`, permissions, and the service for the init system in use
# (systemd, OpenRC or SysV). An existing /etc/offsite/offsite.toml is kept.
#
#   sh install.sh                 # on the box, as root
#   sh install.sh --root DIR      # into a firmware image being built in DIR (user added to DIR/etc/passwd
#                                 # and DIR/etc/group; no service is started)
#   sh install.sh --uninstall     # stop and remove the files; keeps /etc/offsite and /var/lib/offsite
#   sh install.sh --purge         # also removes them and the user
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
src="$here/overlay"
root=/ mode=install
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="${2:?--root needs a folder}"; shift 2 ;;
        --uninstall) mode=uninstall; shift ;;
        --purge) mode=purge; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
root="${root%/}"
R="$root"                       # prefix for paths ("" for /)
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
live=no
[ -z "$R" ] && live=yes

say() { echo "offsite install: $*"; }

# The init system of the running box (only when installing into /).
flavour=none
if [ "$live" = yes ]; then
    if [ -d /run/systemd/system ]; then flavour=systemd
    elif command -v openrc-run >/dev/null 2>&1 || [ -x /sbin/openrc-run ]; then flavour=openrc
    else flavour=sysv
    fi
fi

stop_service() {
    case "$flavour" in
        systemd) systemctl disable --now offsite.service >/dev/null 2>&1 || true ;;
        openrc) rc-service offsite stop >/dev/null 2>&1 || true; rc-update del offsite default >/dev/null 2>&1 || true ;;
        sysv) [ -x /etc/init.d/offsite ] && /etc/init.d/offsite stop || true
              command -v update-rc.d >/dev/null 2>&1 && update-rc.d offsite remove >/dev/null 2>&1 || true
              rm -f /etc/rc[0-6S].d/[SK][0-9][0-9]offsite ;;
    esac
}

if [ "$mode" != install ]; then
    stop_service
    rm -f "$R/usr/bin/offsite" "$R/lib/systemd/system/offsite.service" "$R/etc/init.d/offsite" \
        "$R/lib/udev/rules.d/90-offsite-usb.rules" "$R/usr/lib/offsite/usb-hotplug"
    rmdir "$R/usr/lib/offsite" 2>/dev/null || true
    [ "$flavour" = systemd ] && systemctl daemon-reload || true
    if [ "$mode" = purge ]; then
        rm -rf "$R/etc/offsite" "$R/var/lib/offsite" "$R/var/log/offsite" "$R/etc/default/offsite" "$R/etc/conf.d/offsite"
        if [ "$live" = yes ]; then
            if command -v deluser >/dev/null 2>&1; then deluser offsite >/dev/null 2>&1 || true
            elif command -v userdel >/dev/null 2>&1; then userdel offsite || true; fi
            if getent group offsite >/dev/null 2>&1; then
                if command -v delgroup >/dev/null 2>&1; then delgroup offsite >/dev/null 2>&1 || true
                elif command -v groupdel >/dev/null 2>&1; then groupdel offsite || true; fi
            fi
        else
            sed -i '/^offsite:/d' "$R/etc/passwd" "$R/etc/group"
            [ -f "$R/etc/shadow" ] && sed -i '/^offsite:/d' "$R/etc/shadow"
        fi
        say "purged (the backups on the target are not touched)"
    else
        say "removed the program; kept /etc/offsite and /var/lib/offsite (--purge removes them)"
    fi
    exit 0
fi

[ -x "$src/usr/bin/offsite" ] || { echo "install.sh: no overlay/usr/bin/offsite beside this script" >&2; exit 1; }

# ---- the system user and group (no shell, home /var/lib/offsite)
nologin=/usr/sbin/nologin
[ -x "$R$nologin" ] || nologin=/sbin/nologin
[ -x "$R$nologin" ] || nologin=/bin/false
if [ "$live" = yes ]; then
    if ! getent passwd offsite >/dev/null 2>&1; then
        if command -v adduser >/dev/null 2>&1 && adduser --help 2>&1 | grep -q -- '--system'; then
            # Debian's adduser
            adduser --system --group --home /var/lib/offsite --no-create-home --shell "$nologin" offsite >/dev/null
        elif command -v useradd >/dev/null 2>&1; then
            getent group offsite >/dev/null 2>&1 || groupadd --system offsite
            useradd --system --gid offsite --home-dir /var/lib/offsite --no-create-home --shell "$nologin" offsite
        else
            # BusyBox
            getent group offsite >/dev/null 2>&1 || addgroup -S offsite
            adduser -S -D -H -h /var/lib/offsite -s "$nologin" -G offsite offsite
        fi
    fi
    uid="$(id -u offsite)" gid="$(getent group offsite | cut -d: -f3)"
else
    # An image being built: pick the highest free id below 1000 in its own passwd/group.
    mkdir -p "$R/etc"
    touch "$R/etc/passwd" "$R/etc/group"
    if ! grep -q '^offsite:' "$R/etc/passwd"; then
        id=999
        while cut -d: -f3 "$R/etc/passwd" "$R/etc/group" | grep -qx "$id"; do id=$((id - 1)); done
        grep -q '^offsite:' "$R/etc/group" || echo "offsite:x:$id:" >>"$R/etc/group"
        echo "offsite:x:$id:$(grep '^offsite:' "$R/etc/group" | cut -d: -f3):offsite backup service:/var/lib/offsite:$nologin" >>"$R/etc/passwd"
        [ -f "$R/etc/shadow" ] && echo "offsite:!:0::::::" >>"$R/etc/shadow"
    fi
    uid="$(grep '^offsite:' "$R/etc/passwd" | cut -d: -f3)" gid="$(grep '^offsite:' "$R/etc/group" | cut -d: -f3)"
fi

# ---- the files
install -d -m 0755 "$R/usr/bin" "$R/usr/lib/offsite" "$R/lib/systemd/system" "$R/lib/udev/rules.d" "$R/etc/init.d"
install -m 0755 "$src/usr/bin/offsite" "$R/usr/bin/offsite"
install -m 0755 "$src/usr/lib/offsite/usb-hotplug" "$R/usr/lib/offsite/usb-hotplug"
install -m 0644 "$src/lib/systemd/system/offsite.service" "$R/lib/systemd/system/offsite.service"
install -m 0644 "$src/lib/udev/rules.d/90-offsite-usb.rules" "$R/lib/udev/rules.d/90-offsite-usb.rules"
if [ "$flavour" = openrc ]; then
    install -m 0755 "$src/etc/init.d/offsite.openrc" "$R/etc/init.d/offsite"
    install -d -m 0755 "$R/etc/conf.d"
    [ -f "$R/etc/conf.d/offsite" ] || install -m 0644 "$src/etc/default/offsite" "$R/etc/conf.d/offsite"
else
    install -m 0755 "$src/etc/init.d/offsite" "$R/etc/init.d/offsite"
    install -d -m 0755 "$R/etc/default"
    [ -f "$R/etc/default/offsite" ] || install -m 0644 "$src/etc/default/offsite" "$R/etc/default/offsite"
fi
install -d -m 0770 "$R/etc/offsite"
chown "0:$gid" "$R/etc/offsite"
if [ -f "$R/etc/offsite/offsite.toml" ]; then
    say "kept the existing /etc/offsite/offsite.toml"
else
    install -m 0640 "$src/etc/offsite/offsite.toml" "$R/etc/offsite/offsite.toml"
fi
chown "$uid:$gid" "$R/etc/offsite/offsite.toml"
chmod 0640 "$R/etc/offsite/offsite.toml"
install -d -m 0750 "$R/var/lib/offsite" "$R/var/log/offsite"
install -d -m 0700 "$R/var/lib/offsite/local-target"
chown "$uid:$gid" "$R/var/lib/offsite" "$R/var/lib/offsite/local-target" "$R/var/log/offsite"

# ---- the service
case "$flavour" in
    systemd)
        systemctl daemon-reload
        systemctl enable --now offsite.service
        say "started; the admin page's address and first-start setup code: journalctl -u offsite" ;;
    openrc)
        rc-update add offsite default
        rc-service offsite restart
        say "started; the admin page's address and first-start setup code: /var/log/offsite/offsite.log" ;;
    sysv)
        if command -v update-rc.d >/dev/null 2>&1; then update-rc.d offsite defaults
        else
            for l in 2 3 4 5; do [ -d "/etc/rc$l.d" ] && ln -sf ../init.d/offsite "/etc/rc$l.d/S90offsite"; done
            for l in 0 1 6; do [ -d "/etc/rc$l.d" ] && ln -sf ../init.d/offsite "/etc/rc$l.d/K10offsite"; done
        fi
        /etc/init.d/offsite restart
        say "started; the admin page's address and first-start setup code: /var/log/offsite/offsite.log" ;;
    none) say "installed into $root (user offsite uid $uid gid $gid); the service starts when the image boots" ;;
esac
if [ "$live" = yes ] && command -v udevadm >/dev/null 2>&1; then udevadm control --reload-rules 2>/dev/null || true; fi
