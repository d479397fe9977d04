import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import {
  type ChunkRef,
  CompositionError,
  type CompositionErrorCode,
  type CompositionService,
  type NamespaceRef,
  ROOT_INODE,
} from "../composition/mod.ts";
import { tenant, withSingleNode } from "./test_stack.ts";

const owner = { mode: 0o755, uid: 1000, gid: 1000 };

async function rejectsWith(p: Promise<unknown>, code: CompositionErrorCode): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof CompositionError, String(e));
    assert.equal(e.code, code, e.message);
    return true;
  });
}

function names(service: CompositionService, ns: NamespaceRef, dir: number): string[] {
  return service.readdir(ns, dir).entries.map((e) => e.name).sort();
}

Deno.test("PosixView: mkdir, create, symlink, lookup and link counts", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "fs", "posix", {
      mode: 0o777,
      uid: 0,
      gid: 0,
    });
    const root = service.getattr(ns, ROOT_INODE);
    assert.deepEqual([root.type, root.nlink, root.parent, root.mode], [
      "directory",
      2,
      ROOT_INODE,
      0o777,
    ]);
    const d = await service.mkdir(ns, ROOT_INODE, "docs", owner);
    assert.equal(d.inode, 2);
    assert.equal(service.getattr(ns, ROOT_INODE).nlink, 3);
    const f = await service.createFile(ns, d.inode, "a.txt", { mode: 0o644, uid: 1, gid: 2 });
    assert.deepEqual([f.inode, f.type, f.nlink, f.size, f.mode, f.uid, f.gid], [
      3,
      "file",
      1,
      0,
      0o644,
      1,
      2,
    ]);
    const s = await service.symlink(ns, d.inode, "link", "../elsewhere", { uid: 1, gid: 1 });
    assert.deepEqual([s.type, s.size, s.mode], ["symlink", 12, 0o777]);
    assert.equal(service.readlink(ns, s.inode), "../elsewhere");
    assert.equal(service.lookup(ns, d.inode, "a.txt").inode, f.inode);
    assert.deepEqual(names(service, ns, d.inode), ["a.txt", "link"]);
    assert.equal(service.getattr(ns, d.inode).entries, 2);
    await rejectsWith(service.createFile(ns, d.inode, "a.txt", owner), "exists");
    await rejectsWith(service.mkdir(ns, d.inode, "link", owner), "exists");
    await rejectsWith(service.mkdir(ns, 999, "x", owner), "not_found");
    await rejectsWith(service.mkdir(ns, f.inode, "x", owner), "not_a_directory");
    assert.throws(
      () => service.lookup(ns, d.inode, "nope"),
      (e) => (e as CompositionError).code === "not_found",
    );
    assert.throws(
      () => service.lookup(ns, f.inode, "x"),
      (e) => (e as CompositionError).code === "not_a_directory",
    );
    assert.throws(
      () => service.readlink(ns, f.inode),
      (e) => (e as CompositionError).code === "invalid_argument",
    );
    // Hard links share the inode and count names.
    const l = await service.link(ns, f.inode, ROOT_INODE, "alias");
    assert.equal(l.nlink, 2);
    assert.equal(service.lookup(ns, ROOT_INODE, "alias").inode, f.inode);
    await rejectsWith(service.link(ns, d.inode, ROOT_INODE, "dirlink"), "is_a_directory");
    await rejectsWith(service.link(ns, 12345, ROOT_INODE, "x"), "not_found");
  });
});

Deno.test("PosixView: unlink and rmdir free inodes and report released chunks", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "fs", "posix");
    const d = await service.mkdir(ns, ROOT_INODE, "d", owner);
    const f = await service.createFile(ns, d.inode, "f", owner);
    const chunk = new Uint8Array(32).fill(7);
    await service.writeContent(ns, f.inode, {
      chunkRefs: [{ chunkId: chunk, offsetBytes: 0, lengthBytes: 10 }],
      size: 10,
    });
    await service.link(ns, f.inode, ROOT_INODE, "g");
    await rejectsWith(service.unlink(ns, ROOT_INODE, "d"), "is_a_directory");
    await rejectsWith(service.rmdir(ns, d.inode, "f"), "not_a_directory");
    await rejectsWith(service.rmdir(ns, ROOT_INODE, "d"), "not_empty");
    await rejectsWith(service.unlink(ns, d.inode, "missing"), "not_found");
    assert.deepEqual(await service.unlink(ns, d.inode, "f"), { released: [] });
    assert.equal(service.getattr(ns, f.inode).nlink, 1);
    assert.deepEqual(await service.unlink(ns, ROOT_INODE, "g"), { released: [chunk] });
    assert.throws(
      () => service.getattr(ns, f.inode),
      (e) => (e as CompositionError).code === "not_found",
    );
    await service.rmdir(ns, ROOT_INODE, "d");
    assert.equal(service.getattr(ns, ROOT_INODE).nlink, 2);
    assert.deepEqual(service.readdir(ns, ROOT_INODE), { entries: [], eof: true });
    assert.equal(service.getNamespace(ns).objects, 0);
    assert.equal(service.getNamespace(ns).bytes, 0);
    // Inode numbers are never reused.
    assert.equal((await service.createFile(ns, ROOT_INODE, "new", owner)).inode, 4);
    await rejectsWith(service.deleteNamespace(ns), "namespace_not_empty");
    await service.unlink(ns, ROOT_INODE, "new");
    await service.deleteNamespace(ns);
  });
});

Deno.test("PosixView: rename moves files and directories, replaces compatible targets, refuses cycles", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "fs", "posix");
    const a = await service.mkdir(ns, ROOT_INODE, "a", owner);
    const b = await service.mkdir(ns, a.inode, "b", owner);
    const c = await service.mkdir(ns, b.inode, "c", owner);
    const f = await service.createFile(ns, a.inode, "f", owner);
    // A file within its directory, then across directories: the inode number stays.
    await service.rename(ns, a.inode, "f", a.inode, "g");
    await service.rename(ns, a.inode, "g", c.inode, "h");
    assert.equal(service.lookup(ns, c.inode, "h").inode, f.inode);
    assert.deepEqual(names(service, ns, a.inode), ["b"]);
    // Cycles: into itself, into a descendant.
    await rejectsWith(service.rename(ns, ROOT_INODE, "a", a.inode, "x"), "invalid_rename");
    await rejectsWith(service.rename(ns, ROOT_INODE, "a", c.inode, "x"), "invalid_rename");
    await rejectsWith(service.rename(ns, a.inode, "b", b.inode, "x"), "invalid_rename");
    // A directory moves up: link counts and parent follow.
    await service.rename(ns, b.inode, "c", ROOT_INODE, "c2");
    assert.equal(service.getattr(ns, c.inode).parent, ROOT_INODE);
    assert.equal(service.getattr(ns, b.inode).nlink, 2);
    assert.equal(service.getattr(ns, ROOT_INODE).nlink, 4);
    // Now b may move under c2 (no longer a cycle).
    await service.rename(ns, a.inode, "b", c.inode, "b");
    assert.equal(service.getattr(ns, a.inode).nlink, 2);
    assert.equal(service.getattr(ns, c.inode).nlink, 3);
    // Over an existing file: the replaced file's chunks are released.
    const x = await service.createFile(ns, ROOT_INODE, "x", owner);
    const y = await service.createFile(ns, ROOT_INODE, "y", owner);
    const chunk = new Uint8Array(32).fill(3);
    await service.writeContent(ns, y.inode, {
      chunkRefs: [{ chunkId: chunk, offsetBytes: 0, lengthBytes: 4 }],
      size: 4,
    });
    assert.deepEqual((await service.rename(ns, ROOT_INODE, "x", ROOT_INODE, "y")).released, [
      chunk,
    ]);
    assert.equal(service.lookup(ns, ROOT_INODE, "y").inode, x.inode);
    assert.throws(
      () => service.getattr(ns, y.inode),
      (e) => (e as CompositionError).code === "not_found",
    );
    // Type rules for the target.
    const e1 = await service.mkdir(ns, ROOT_INODE, "empty", owner);
    await rejectsWith(service.rename(ns, ROOT_INODE, "y", ROOT_INODE, "empty"), "is_a_directory");
    await rejectsWith(service.rename(ns, ROOT_INODE, "empty", ROOT_INODE, "y"), "not_a_directory");
    await rejectsWith(service.rename(ns, ROOT_INODE, "empty", ROOT_INODE, "c2"), "not_empty");
    await rejectsWith(service.rename(ns, ROOT_INODE, "nope", ROOT_INODE, "z"), "not_found");
    // Over an empty directory.
    const e2 = await service.mkdir(ns, c.inode, "e2", owner);
    await service.rename(ns, c.inode, "e2", ROOT_INODE, "empty");
    assert.equal(service.lookup(ns, ROOT_INODE, "empty").inode, e2.inode);
    assert.throws(
      () => service.getattr(ns, e1.inode),
      (e) => (e as CompositionError).code === "not_found",
    );
    assert.equal(service.getattr(ns, e2.inode).parent, ROOT_INODE);
    // Two names of one inode: rename does nothing.
    await service.link(ns, x.inode, ROOT_INODE, "x2");
    await service.rename(ns, ROOT_INODE, "x2", ROOT_INODE, "y");
    assert.deepEqual(names(service, ns, ROOT_INODE), ["a", "c2", "empty", "x2", "y"]);
    assert.equal(service.getattr(ns, x.inode).nlink, 2);
  });
});

Deno.test("PosixView.readdir() cookies stay valid resume points while the directory changes", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "fs", "posix");
    for (let i = 0; i < 10; i++) await service.createFile(ns, ROOT_INODE, `f${i}`, owner);
    const first = service.readdir(ns, ROOT_INODE, { count: 4 });
    assert.deepEqual(first.entries.map((e) => e.name), ["f0", "f1", "f2", "f3"]);
    assert.equal(first.eof, false);
    const cookie = first.entries[3]!.cookie;
    // Remove one entry already returned and one not yet; add one.
    await service.unlink(ns, ROOT_INODE, "f1");
    await service.unlink(ns, ROOT_INODE, "f5");
    await service.createFile(ns, ROOT_INODE, "late", owner);
    const rest: string[] = [];
    let at = cookie;
    for (;;) {
      const page = service.readdir(ns, ROOT_INODE, { cookie: at, count: 2 });
      rest.push(...page.entries.map((e) => e.name));
      if (page.eof) break;
      at = page.entries[page.entries.length - 1]!.cookie;
    }
    assert.deepEqual(rest, ["f4", "f6", "f7", "f8", "f9", "late"]);
    // A renamed entry gets a new cookie (it may be seen again, never lost).
    await service.rename(ns, ROOT_INODE, "f0", ROOT_INODE, "f0-renamed");
    const all = service.readdir(ns, ROOT_INODE).entries;
    assert.equal(all[all.length - 1]!.name, "f0-renamed");
    assert.ok(all.every((e, i) => i === 0 || e.cookie > all[i - 1]!.cookie));
  });
});

Deno.test("PosixView: setattr truncates and extends, writeContent replaces, times follow", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "fs", "posix");
    const f = await service.createFile(ns, ROOT_INODE, "f", owner);
    const id = (n: number) => new Uint8Array(32).fill(n);
    const refs: ChunkRef[] = [
      { chunkId: id(1), offsetBytes: 0, lengthBytes: 100 },
      { chunkId: id(2), offsetBytes: 150, lengthBytes: 100 },
      { chunkId: id(3), offsetBytes: 300, lengthBytes: 100 },
    ];
    const written = await service.writeContent(ns, f.inode, { chunkRefs: refs, size: 500 });
    assert.equal(written.size, 500);
    assert.ok(written.version > f.version);
    // Truncate into the middle of the second chunk: the third is released, the second clipped.
    const cut = await service.setAttributes(ns, f.inode, { size: 200, mode: 0o600, uid: 5 });
    assert.deepEqual(cut.released, [id(3)]);
    assert.deepEqual(cut.content, {
      kind: "chunks",
      chunkRefs: [refs[0], { chunkId: id(2), offsetBytes: 150, lengthBytes: 50 }],
    });
    assert.deepEqual([cut.size, cut.mode, cut.uid, cut.gid], [200, 0o600, 5, 1000]);
    // Extending leaves a hole: the clipped bytes do not come back.
    const grown = await service.setAttributes(ns, f.inode, { size: 1000 });
    assert.equal(grown.size, 1000);
    assert.deepEqual(grown.content, cut.content);
    const t = { sec: 1_000_000, nsec: 5 };
    const timed = await service.setAttributes(ns, f.inode, { atime: t, mtime: t });
    assert.deepEqual([timed.atime, timed.mtime], [t, t]);
    assert.ok(timed.ctime.sec > t.sec);
    const inline = await service.writeContent(ns, f.inode, {
      inline: new Uint8Array([1, 2, 3]),
      size: 10,
    });
    assert.deepEqual(inline.released, [id(1), id(2)]);
    const small = await service.setAttributes(ns, f.inode, { size: 2 });
    assert.deepEqual(small.content, { kind: "inline", bytes: new Uint8Array([1, 2]) });
    assert.equal(service.getNamespace(ns).bytes, 2);
    await rejectsWith(service.setAttributes(ns, ROOT_INODE, { size: 1 }), "is_a_directory");
    await rejectsWith(
      service.writeContent(ns, ROOT_INODE, { inline: new Uint8Array(0), size: 0 }),
      "is_a_directory",
    );
    await rejectsWith(service.setAttributes(ns, 77, { mode: 0 }), "not_found");
    await rejectsWith(service.setAttributes(ns, f.inode, { mode: 0o10000 }), "invalid_argument");
  });
});

// ---- a model-based random test ---------------------------------------------------------------

interface ModelNode {
  type: "file" | "directory";
  nlink: number;
  children: Map<string, number>;
  parent: number;
}

Deno.test("PosixView matches a model of POSIX semantics over random operations", async () => {
  await withSingleNode(async ({ service }) => {
    const prng = new Prng(2024);
    const ns = await service.createNamespace(tenant(1), "fs", "posix");
    const model = new Map<number, ModelNode>([[ROOT_INODE, {
      type: "directory",
      nlink: 2,
      children: new Map(),
      parent: ROOT_INODE,
    }]]);
    const NAMES = ["a", "b", "c", "d", "e", "f", "g"];
    const dirs = () => [...model].filter(([, n]) => n.type === "directory").map(([i]) => i);
    const pick = <T>(xs: T[]): T => xs[prng.nextInt(xs.length)]!;
    const isAncestor = (a: number, of: number) => {
      for (let at = of;; at = model.get(at)!.parent) {
        if (at === a) return true;
        if (at === ROOT_INODE) return false;
      }
    };
    const unlinkModel = (ino: number) => {
      const n = model.get(ino)!;
      n.nlink--;
      if (n.nlink === 0) model.delete(ino);
    };
    const stats = { ok: 0, refused: 0 };
    for (let step = 0; step < 600; step++) {
      const dir = pick(dirs());
      const d = model.get(dir)!;
      const name = pick(NAMES);
      const existing = d.children.get(name);
      const op = prng.nextInt(6);
      let expect: CompositionErrorCode | null = null;
      let run: () => Promise<unknown>;
      let apply: (result: { inode?: number }) => void = () => {};
      if (op === 0 || op === 1) {
        const type = op === 0 ? "directory" : "file";
        expect = existing !== undefined ? "exists" : null;
        run = () =>
          type === "directory"
            ? service.mkdir(ns, dir, name, owner)
            : service.createFile(ns, dir, name, owner);
        apply = (r) => {
          model.set(r.inode!, {
            type,
            nlink: type === "directory" ? 2 : 1,
            children: new Map(),
            parent: type === "directory" ? dir : 0,
          });
          d.children.set(name, r.inode!);
          if (type === "directory") d.nlink++;
        };
      } else if (op === 2) {
        const files = [...model].filter(([, n]) => n.type === "file").map(([i]) => i);
        if (files.length === 0) continue;
        const target = pick(files);
        expect = existing !== undefined ? "exists" : null;
        run = () => service.link(ns, target, dir, name);
        apply = () => {
          model.get(target)!.nlink++;
          d.children.set(name, target);
        };
      } else if (op === 3) {
        const node = existing === undefined ? undefined : model.get(existing)!;
        expect = node === undefined
          ? "not_found"
          : node.type === "directory"
          ? "is_a_directory"
          : null;
        run = () => service.unlink(ns, dir, name);
        apply = () => {
          d.children.delete(name);
          unlinkModel(existing!);
        };
      } else if (op === 4) {
        const node = existing === undefined ? undefined : model.get(existing)!;
        expect = node === undefined
          ? "not_found"
          : node.type !== "directory"
          ? "not_a_directory"
          : node.children.size > 0
          ? "not_empty"
          : null;
        run = () => service.rmdir(ns, dir, name);
        apply = () => {
          d.children.delete(name);
          model.delete(existing!);
          d.nlink--;
        };
      } else {
        const to = pick(dirs());
        const toNode = model.get(to)!;
        const newName = pick(NAMES);
        const moving = existing === undefined ? undefined : model.get(existing)!;
        const target = toNode.children.get(newName);
        const replaced = target === undefined ? undefined : model.get(target)!;
        if (moving === undefined) expect = "not_found";
        else if (moving.type === "directory" && isAncestor(existing!, to)) {
          expect = "invalid_rename";
        } else if (target === existing) expect = null;
        else if (
          replaced !== undefined && moving.type === "directory" && replaced.type !== "directory"
        ) {
          expect = "not_a_directory";
        } else if (
          replaced !== undefined && moving.type === "directory" && replaced.children.size > 0
        ) {
          expect = "not_empty";
        } else if (
          replaced !== undefined && moving.type !== "directory" && replaced.type === "directory"
        ) {
          expect = "is_a_directory";
        }
        run = () => service.rename(ns, dir, name, to, newName);
        apply = () => {
          if (target === existing) return;
          if (replaced !== undefined) {
            toNode.children.delete(newName);
            if (replaced.type === "directory") {
              model.delete(target!);
              toNode.nlink--;
            } else unlinkModel(target!);
          }
          d.children.delete(name);
          if (moving!.type === "directory" && dir !== to) {
            d.nlink--;
            toNode.nlink++;
            moving!.parent = to;
          }
          toNode.children.set(newName, existing!);
        };
      }
      if (expect === null) {
        apply((await run()) as { inode?: number });
        stats.ok++;
      } else {
        await rejectsWith(run(), expect);
        stats.refused++;
      }
      if (step % 50 === 49) {
        for (const [ino, node] of model) {
          const attrs = service.getattr(ns, ino);
          assert.equal(attrs.type, node.type, `inode ${ino} type`);
          assert.equal(attrs.nlink, node.nlink, `inode ${ino} nlink at step ${step}`);
          if (node.type !== "directory") continue;
          assert.equal(attrs.parent, node.parent === 0 ? ROOT_INODE : node.parent);
          const listed = service.readdir(ns, ino).entries.map((e) => [e.name, e.inode] as const);
          assert.deepEqual(new Map(listed), node.children, `directory ${ino} entries`);
        }
        assert.equal(service.getNamespace(ns).objects, model.size - 1);
      }
    }
    assert.ok(stats.ok > 200 && stats.refused > 100, JSON.stringify(stats));
  });
});
