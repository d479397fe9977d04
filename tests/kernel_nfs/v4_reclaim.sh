# Guest script: v4_reclaim.sh PORT BUCKET -- the Linux kernel client holds a flock on an NFSv4.2
# mount while the host kills the server with SIGKILL and starts it again: the client reclaims
# its open and lock in the grace period, so a second locker is still refused, and what was
# written before the kill reads back. Prints "ok: ..." or "FAIL: ..." per check.
P=$1; B=$2; H=${KISEKI_HOST:-10.0.2.2}; M=/mnt/k; fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
mkdir -p $M
mount.nfs "$H:/$B" $M -o "vers=4.2,proto=tcp,port=$P" || { echo "FAIL: mount"; exit 1; }
echo "before the restart" > $M/durable.txt
echo data > $M/held
flock -x $M/held -c "touch /tmp/locked; sleep 120" &
holder=$!
n=0; while [ ! -e /tmp/locked ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
# -E 42: a refusal because another holds the lock, told apart from any other failure.
flock -E 42 -n -x $M/held -c true; rc=$?
[ $rc = 42 ] && ok "the lock is held" || bad "the lock is not held (flock: $rc)"
# The host restarts the server once it sees this file, then writes "restarted".
echo go > $M/restart-now
n=0; while [ ! -e $M/restarted ] && [ $n -lt 300 ]; do sleep 1; ls $M > /dev/null; n=$((n + 1)); done
[ -e $M/restarted ] && ok "the server came back ($n s)" || bad "no restart seen"
[ "$(cat $M/durable.txt)" = "before the restart" ] && ok "a file written before SIGKILL reads back" \
  || bad "durable.txt: $(cat $M/durable.txt 2>&1)"
flock -E 42 -n -x $M/held -c true; rc=$?
[ $rc = 42 ] && ok "the lock held across the restart was reclaimed: a second locker is refused" \
  || bad "the lock held across the restart: flock $rc"
echo after > $M/after.txt && [ "$(cat $M/after.txt)" = after ] && ok "new files after the grace period" \
  || bad "write after the restart"
kill $holder $(pidof sleep) 2>/dev/null; wait
n=0; until flock -n -x $M/held -c true || [ $n -ge 40 ]; do sleep 0.5; n=$((n + 1)); done
flock -n -x $M/held -c true && ok "the reclaimed lock goes with its holder" || bad "lock never released"
umount $M || bad "umount"
echo "done: fail=$fail"
exit $fail
