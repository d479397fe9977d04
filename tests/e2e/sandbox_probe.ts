// Tries one forbidden or allowed action under whatever permissions it was started with and
// prints `ALLOWED` or `REFUSED <error>`. The sandbox test runs it with each role's flags.

const [action, target] = Deno.args;

function refused(e: unknown): boolean {
  return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
}

try {
  switch (action) {
    case "listen": {
      const [host, port] = target!.split(/:(?=\d+$)/);
      Deno.listen({ hostname: host, port: Number(port) }).close();
      break;
    }
    case "dial": {
      const [host, port] = target!.split(/:(?=\d+$)/);
      try {
        (await Deno.connect({ hostname: host, port: Number(port) })).close();
      } catch (e) {
        if (refused(e)) throw e; // connection refused by the peer still means the sandbox allowed it
      }
      break;
    }
    case "ffi":
      Deno.dlopen(target!, {}).close();
      break;
    case "write":
      Deno.writeTextFileSync(target!, "probe");
      Deno.removeSync(target!);
      break;
    case "read":
      Deno.readFileSync(target!);
      break;
    case "env":
      Deno.env.get(target!);
      break;
    case "run":
      new Deno.Command(target!).outputSync();
      break;
    default:
      throw new Error(`unknown action ${action}`);
  }
  console.log("ALLOWED");
} catch (e) {
  console.log(
    refused(e)
      ? `REFUSED ${(e as Error).name}`
      : `ERROR ${(e as Error).name}: ${(e as Error).message}`,
  );
}
