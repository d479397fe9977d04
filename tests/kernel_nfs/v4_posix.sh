# Guest script: v4_posix.sh PORT BUCKET SIZE_MIB MINOR -- the Linux kernel NFS client on a
# Kiseki bucket mounted with NFSv4.MINOR (one port, no MOUNT protocol, no rpcbind): a file S3
# wrote, a large copy in and out with checksums, ls -l, deep mkdir -p, renames, symlinks,
# chmod/chown/touch, truncate, flock, tar in and out. Prints "ok: ..." or "FAIL: ..." per check.
P=$1; B=$2; SIZE=${3:-100}; MINOR=${4:-1}; H=${KISEKI_HOST:-10.0.2.2}; M=/mnt/k; fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
O="vers=4.$MINOR,proto=tcp,port=$P"
mkdir -p $M
mount.nfs "$H:/$B" $M -o "$O" || { echo "FAIL: mount"; dmesg | tail -20; exit 1; }
grep " $M " /proc/mounts
grep -q "vers=4.$MINOR" /proc/mounts && ok "mounted with NFSv4.$MINOR" || bad "not v4.$MINOR: $(grep " $M " /proc/mounts)"

[ "$(cat $M/from-s3/hello.txt)" = "hello from s3" ] && ok "an object S3 wrote reads over NFS" \
  || bad "S3 object read: $(cat $M/from-s3/hello.txt 2>&1)"

dd if=/dev/urandom of=/tmp/big bs=1M count="$SIZE" 2>/dev/null
want=$(sha256sum /tmp/big | cut -d' ' -f1)
t0=$(cut -d' ' -f1 /proc/uptime)
cp /tmp/big $M/big.bin && sync || bad "copy in"
t1=$(cut -d' ' -f1 /proc/uptime)
umount $M && mount.nfs "$H:/$B" $M -o "$O" || bad "remount"
got=$(sha256sum $M/big.bin | cut -d' ' -f1)
t2=$(cut -d' ' -f1 /proc/uptime)
[ "$got" = "$want" ] && ok "$SIZE MiB in and out, sha256 $got" || bad "sha256 $got != $want"
cp $M/big.bin /tmp/back.bin && [ "$(sha256sum /tmp/back.bin | cut -d' ' -f1)" = "$want" ] \
  && ok "copied out, same sha256" || bad "copy out"
rm -f /tmp/back.bin
echo "$want" > $M/big.sha256
echo "time: write ${SIZE} MiB $(awk "BEGIN{print $t1-$t0}")s, read $(awk "BEGIN{print $t2-$t1}")s"
ls -l $M | grep -q " $((SIZE * 1048576)) .* big.bin$" && ok "ls -l shows the size" || { bad "ls -l"; ls -l $M; }

mkdir -p $M/a/b/c/d/e/f/g/h && [ -d $M/a/b/c/d/e/f/g/h ] && ok "mkdir -p 8 deep" || bad "mkdir -p"
echo leaf > $M/a/b/c/d/e/f/g/h/leaf
mv $M/a/b/c/d/e/f/g/h/leaf $M/a/leaf2 && [ "$(cat $M/a/leaf2)" = leaf ] \
  && [ ! -e $M/a/b/c/d/e/f/g/h/leaf ] && ok "rename across directories" || bad "rename file"
mv $M/a/b $M/moved && [ -d $M/moved/c/d/e/f/g/h ] && [ ! -e $M/a/b ] \
  && ok "rename of a directory tree" || bad "rename directory"

ln -s a/leaf2 $M/link && [ "$(readlink $M/link)" = a/leaf2 ] && [ "$(cat $M/link)" = leaf ] \
  && ok "symlink" || bad "symlink"
if ln $M/a/leaf2 $M/hard 2>/tmp/lnerr; then
  [ "$(stat -c %h $M/hard)" = 2 ] && [ "$(stat -c %i $M/hard)" = "$(stat -c %i $M/a/leaf2)" ] \
    && ok "hard link: one inode, two links" || bad "hard link: $(stat -c '%h %i' $M/hard $M/a/leaf2)"
  echo more >> $M/hard
  [ "$(cat $M/a/leaf2)" = "$(printf 'leaf\nmore')" ] && ok "a write through one name reads through the other" \
    || bad "hard link write: $(cat $M/a/leaf2)"
  rm $M/hard && [ "$(cat $M/a/leaf2)" = "$(printf 'leaf\nmore')" ] && [ ! -e $M/hard ] \
    && ok "unlinking one name keeps the other" || bad "hard link unlink"
else bad "hard link: $(cat /tmp/lnerr)"; fi

chmod 640 $M/a/leaf2 && [ "$(stat -c %a $M/a/leaf2)" = 640 ] && ok "chmod" || bad "chmod $(stat -c %a $M/a/leaf2)"
chown 1000:100 $M/a/leaf2 && [ "$(stat -c %u:%g $M/a/leaf2)" = 1000:100 ] && ok "chown" || bad "chown $(stat -c %u:%g $M/a/leaf2)"
touch -d "2020-01-02 03:04:05" $M/a/leaf2 $M/a/stamp && [ "$(stat -c %Y $M/a/leaf2)" = 1577934245 ] \
  && [ "$(stat -c %Y $M/a/stamp)" = 1577934245 ] && ok "touch -d" || bad "touch -d: $(stat -c %Y $M/a/leaf2)"
truncate -s 2 $M/a/leaf2 && [ "$(cat $M/a/leaf2)" = le ] && ok "truncate down" || bad "truncate down"
truncate -s 8192 $M/a/leaf2 && [ "$(stat -c %s $M/a/leaf2)" = 8192 ] \
  && [ "$(tail -c 4 $M/a/leaf2 | od -An -tx1 | tr -d ' ')" = 00000000 ] && ok "truncate up (sparse)" \
  || bad "truncate up"

# flock over NFSv4 is a whole-file byte-range lock the server arbitrates.
echo lock > $M/lockfile
flock -x $M/lockfile -c "echo held > /tmp/held; sleep 4" &
holder=$!
n=0; while [ ! -e /tmp/held ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
flock -E 42 -n -x $M/lockfile -c true; rc=$?
[ $rc = 42 ] && ok "flock: a held lock refuses a second" || bad "flock: a second lock: $rc"
wait $holder
flock -n -x $M/lockfile -c true && ok "flock: granted once released" || bad "flock after release"
flock -s $M/lockfile -c "flock -n -s $M/lockfile -c true" && ok "flock: shared locks coexist" \
  || bad "flock shared"

mkdir -p /tmp/tree/d1/d2/d3 /tmp/tree/empty
for i in 1 2 3 4 5 6 7 8 9 10; do
  dd if=/dev/urandom of=/tmp/tree/d1/f$i bs=1k count=$((i * 7)) 2>/dev/null
  echo "file $i" > /tmp/tree/d1/d2/d3/t$i
done
ln -s d1/f1 /tmp/tree/lnk
(cd /tmp && tar -cf - tree) | (cd $M && tar -xf -) || bad "tar in"
(cd $M && tar -cf /tmp/back.tar tree) || bad "tar out"
mkdir -p /tmp/back && tar -C /tmp/back -xf /tmp/back.tar
a=$(cd /tmp/tree && find . | sort | while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && sha256sum "$f"; echo "$f"; done | sha256sum)
b=$(cd /tmp/back/tree && find . | sort | while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && sha256sum "$f"; echo "$f"; done | sha256sum)
[ "$a" = "$b" ] && ok "tar a tree in and out" || bad "tar tree differs"
[ "$(readlink /tmp/back/tree/lnk)" = d1/f1 ] && ok "tar keeps the symlink" || bad "tar symlink"

echo "written by the kernel client" > $M/from-nfs.txt
rm -r $M/tree && [ ! -e $M/tree ] && ok "rm -r" || bad "rm -r"
rmdir $M/moved 2>/dev/null && bad "rmdir of a non-empty directory" || ok "rmdir refuses a non-empty directory"
ls -l $M
umount $M || bad "umount"
echo "done: fail=$fail"
exit $fail
