import { startMount } from "/work/wt/fuse2/tests/fuse/_mount.ts";
const m = await startMount({ hostOctet: 83 });
const sh = async (cmd: string, cwd: string) => {
  const o = await new Deno.Command("bash", { args: ["-c", cmd], cwd, env: { HOME: "/tmp/fz", GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@x", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@x" } }).output();
  console.log(cmd, o.code, new TextDecoder().decode(o.stdout), new TextDecoder().decode(o.stderr));
};
try {
  await Deno.mkdir(`${m.mountpoint}/tools`);
  await sh("git init -q -b main repo && echo a > repo/a && cd repo && git add -A && git commit -qm first", `${m.mountpoint}/tools`);
  await sh("git clone -q repo clone; ls -la clone clone/.git", `${m.mountpoint}/tools`);
  await sh("mkdir -p x/y && cp /etc/hostname x/y/h && ls x/y", `${m.mountpoint}/tools`);
} finally {
  console.log("CLIENT", m.stderr().slice(-3000));
  console.log("SERVER", m.server.role.stderr().slice(-3000));
  await m.stop(); await m.cleanup();
}
