// Roles: the composition roots, one per binary, and the table of their permissions.
export {
  INSTALLED_NODE_MODULES_DIR,
  isRoleName,
  ROLE_NAMES,
  ROLE_TABLE,
  roleConfig,
  roleFlags,
  SOURCE_NODE_MODULES_DIR,
  SOURCE_PROTO_DIR,
} from "./table.ts";
export type { RoleFlagsOptions, RoleName, RoleSpec } from "./table.ts";
export {
  defaultFfiDir,
  INSTALLED_DEFAULTS,
  INSTALLED_FFI_DIR,
  isCompiled,
  readConfigEnv,
} from "./_run.ts";
