# Sourced by the bench scripts: a private OpenSSH server on a free 127.0.0.1 port with its own host key,
# client key, config and HOME (../shared/notes/test-peers.md), stopped and removed with $work on exit.
# Needs: $work (an empty folder). Sets: port, user, ssh_cmd (a stock ssh command line for it); defines
# config (an offsite config file pushing one share to this server).
cleanup() { [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N '' -f "$work/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$work/clientkey"
cp "$work/clientkey.pub" "$work/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/home" /run/sshd
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/hostkey
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
SetEnv HOME=$work/home
CFG
/usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
for _ in $(seq 50); do ssh-keyscan -p "$port" 127.0.0.1 > "$work/known_hosts" 2>/dev/null && [ -s "$work/known_hosts" ] && break; sleep 0.1; done
user=$(id -un)
ssh_cmd="ssh -p $port -i $work/clientkey -o UserKnownHostsFile=$work/known_hosts -o BatchMode=yes"

# An offsite config for a share pushed to this sshd (keys in $work/master.key and $work/clientkey).
config() { # share-name share-path target-dir -> config file path
  mkdir -p "$3"
  cat > "$work/$1.toml" <<CFG
state_dir = "$work/state-$1"
key_file = "$work/master.key"
[target]
host = "127.0.0.1"
port = $port
user = "$user"
identity_file = "$work/clientkey"
known_hosts = "$work/known_hosts"
path = "$3"
[[share]]
name = "$1"
path = "$2"
retention = { last = 100 }
CFG
  echo "$work/$1.toml"
}
