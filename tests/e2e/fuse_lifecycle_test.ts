// How a kiseki-client-fuse mount ends: SIGTERM and SIGINT of the client role unmount and the
// role exits 0 with what was written stored on the server; a client killed outright leaves an
// aborted mount that `umount -l` clears, and what was closed before the kill is there when a
// new client mounts. Also the unprivileged path: fusermount3 mounts and unmounts (the role
// runs as root here and mounts with mount(2), so that one runs the in-process mount). And
// the mount outlives a server restart: an operation issued while the node is down completes.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/testing.ts";
import {
  fuseMissing,
  isMounted,
  lazyUnmount,
  type RunningServer,
  startMount,
  startServer,
} from "../fuse/_mount.ts";
import { startMount as startInProcessMount } from "../fuse/_mount_in_process.ts";

const ignore = missingPart("a FUSE mount (/dev/fuse as root)", fuseMissing());
const HOST_OCTET = 84;

Deno.test({
  name: "kiseki-client-fuse unmounts cleanly on SIGTERM and SIGINT, and is killed -9 cleanly",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const base = await Deno.makeTempDir({ prefix: "kiseki-fuse-life-" });
    let server: RunningServer | null = null;
    try {
      // One server for every client in this file: each step mounts a fresh client role.
      server = await startServer({ hostOctet: HOST_OCTET, base });
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        await t.step(`${signal} unmounts and what was written is stored`, async () => {
          const m = await startMount({ hostOctet: HOST_OCTET, server: server! });
          try {
            const dir = `${m.mountpoint}/life-${signal.toLowerCase()}`;
            await Deno.mkdir(dir);
            await Deno.writeTextFile(`${dir}/kept`, `written before ${signal}`);
            assert.equal(await isMounted(m.mountpoint), true);
            const code = await m.stop(signal);
            assert.equal(code, 0, m.stderr());
            assert.equal(await isMounted(m.mountpoint), false, "the mount is gone");
          } finally {
            await m.cleanup();
          }
          // A new client on the same server reads what the first one wrote.
          const again = await startMount({ hostOctet: HOST_OCTET, server: server! });
          try {
            assert.equal(
              await Deno.readTextFile(
                `${again.mountpoint}/life-${signal.toLowerCase()}/kept`,
              ),
              `written before ${signal}`,
            );
            assert.equal(await again.stop("SIGTERM"), 0, again.stderr());
          } finally {
            await again.cleanup();
          }
        });
      }
      await t.step("SIGKILL leaves a mount umount -l clears; closed files are stored", async () => {
        const m = await startMount({ hostOctet: HOST_OCTET, server: server! });
        try {
          await Deno.mkdir(`${m.mountpoint}/crash`);
          await Deno.writeTextFile(`${m.mountpoint}/crash/closed`, "closed before the kill");
          assert.equal(await m.stop("SIGKILL"), 137);
          assert.equal(await isMounted(m.mountpoint), true, "a killed client leaves its mount");
          const err = await Deno.stat(`${m.mountpoint}/crash`).then(() => "ok", (e) => String(e));
          assert.match(err, /not connected/i);
          await lazyUnmount(m.mountpoint);
          assert.equal(await isMounted(m.mountpoint), false, "umount -l clears it");
        } finally {
          await m.cleanup();
        }
        const again = await startMount({ hostOctet: HOST_OCTET, server: server! });
        try {
          assert.equal(
            await Deno.readTextFile(`${again.mountpoint}/crash/closed`),
            "closed before the kill",
          );
          assert.equal(await again.stop("SIGTERM"), 0, again.stderr());
        } finally {
          await again.cleanup();
        }
      });
      await t.step(
        "serves /health and /metrics (its cache's hits) on KISEKI_METRICS_ADDR",
        async () => {
          const metricsAddr = `127.0.${HOST_OCTET}.2:9190`;
          const m = await startMount({ hostOctet: HOST_OCTET, server: server!, metricsAddr });
          try {
            const health = await fetch(`http://${metricsAddr}/health`);
            assert.equal(health.status, 200);
            assert.equal(await health.text(), "OK");
            const hits = async () => {
              const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
              return [...text.matchAll(/^kiseki_client_cache_hits_total\{[^}]*\} (\d+)/gm)]
                .reduce((sum, x) => sum + Number(x[1]), 0);
            };
            const before = await hits();
            await Deno.mkdir(`${m.mountpoint}/metrics`);
            await Deno.writeFile(`${m.mountpoint}/metrics/f`, new Uint8Array(1 << 20).fill(7));
            // Read twice through fresh opens: the chunks come from the cache.
            for (let i = 0; i < 2; i++) {
              assert.equal((await Deno.readFile(`${m.mountpoint}/metrics/f`)).length, 1 << 20);
            }
            assert.ok((await hits()) > before, "reads through the mount count cache hits");
            assert.equal(await m.stop("SIGTERM"), 0, m.stderr());
          } finally {
            await m.cleanup();
          }
        },
      );
      await t.step(
        "the mount survives a server restart: an op issued while it is down completes",
        async () => {
          const m = await startMount({ hostOctet: HOST_OCTET, server: server! });
          try {
            const dir = `${m.mountpoint}/restart`;
            await Deno.mkdir(dir);
            const before = new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff);
            await Deno.writeFile(`${dir}/before`, before);
            assert.equal(await server!.stop("SIGTERM"), 0, server!.role.stderr());
            // Issued while no node answers: the client retries until the node is back.
            const during = new Uint8Array(2 << 20).map((_, i) => (i * 13) & 0xff);
            let settled = false;
            const written = Deno.writeFile(`${dir}/during`, during).finally(() => settled = true);
            const listed = Array.fromAsync(Deno.readDir(dir));
            await new Promise((r) => setTimeout(r, 1500));
            assert.equal(settled, false, "the write waits for the node; it does not fail");
            await server!.restart();
            await written;
            assert.ok((await listed).some((e) => e.name === "before"));
            assert.deepEqual(await Deno.readFile(`${dir}/during`), during);
            // After the restart, through the same mount: old bytes (past the cache) and new ones.
            await Deno.writeTextFile(`${dir}/after`, "written after the restart");
            assert.equal(await Deno.readTextFile(`${dir}/after`), "written after the restart");
            assert.deepEqual(await Deno.readFile(`${dir}/before`), before);
            assert.equal(await m.stop("SIGTERM"), 0, m.stderr());
          } finally {
            await m.cleanup();
          }
          // A fresh client (empty cache) reads everything from the restarted server.
          const again = await startMount({ hostOctet: HOST_OCTET, server: server! });
          try {
            assert.equal(
              (await Deno.readFile(`${again.mountpoint}/restart/during`)).length,
              2 << 20,
            );
            assert.equal(await again.stop("SIGTERM"), 0, again.stderr());
          } finally {
            await again.cleanup();
          }
        },
      );
    } finally {
      await server?.stop("SIGTERM");
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "FUSE mount through fusermount3 serves and unmounts",
  ignore: ignore || missingPart("fusermount3", hasFusermount() ? null : "fusermount3 missing"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const m = await startInProcessMount({ fusermount: true });
    try {
      const mounts = await Deno.readTextFile("/proc/self/mounts");
      assert.match(mounts, new RegExp(`${m.mountpoint} fuse.kiseki `));
      await Deno.mkdir(`${m.mountpoint}/fmt`);
      await Deno.writeTextFile(`${m.mountpoint}/fmt/f`, "via fusermount3");
      assert.equal(await Deno.readTextFile(`${m.mountpoint}/fmt/f`), "via fusermount3");
      assert.equal(await m.stop("SIGTERM"), 0, m.stderr());
      assert.equal(await isMounted(m.mountpoint), false);
    } finally {
      await m.cleanup();
    }
  },
});

function hasFusermount(): boolean {
  return new Deno.Command("sh", { args: ["-c", "command -v fusermount3"] }).outputSync().success;
}
