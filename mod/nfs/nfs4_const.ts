// NFSv4.1 and 4.2 protocol numbers (RFC 8881 §16-18, RFC 7862 §11-15): operation codes,
// nfsstat4 values, attribute bits and the enums of operation arguments, with the protocol's
// own names so they can be checked against the RFCs' XDR.

export const NFS4_VERSION = 4;
export const NFSPROC4_NULL = 0;
export const NFSPROC4_COMPOUND = 1;

// nfs_opnum4
export const OP_ACCESS = 3;
export const OP_CLOSE = 4;
export const OP_COMMIT = 5;
export const OP_CREATE = 6;
export const OP_DELEGPURGE = 7;
export const OP_DELEGRETURN = 8;
export const OP_GETATTR = 9;
export const OP_GETFH = 10;
export const OP_LINK = 11;
export const OP_LOCK = 12;
export const OP_LOCKT = 13;
export const OP_LOCKU = 14;
export const OP_LOOKUP = 15;
export const OP_LOOKUPP = 16;
export const OP_NVERIFY = 17;
export const OP_OPEN = 18;
export const OP_OPENATTR = 19;
export const OP_OPEN_CONFIRM = 20;
export const OP_OPEN_DOWNGRADE = 21;
export const OP_PUTFH = 22;
export const OP_PUTPUBFH = 23;
export const OP_PUTROOTFH = 24;
export const OP_READ = 25;
export const OP_READDIR = 26;
export const OP_READLINK = 27;
export const OP_REMOVE = 28;
export const OP_RENAME = 29;
export const OP_RENEW = 30;
export const OP_RESTOREFH = 31;
export const OP_SAVEFH = 32;
export const OP_SECINFO = 33;
export const OP_SETATTR = 34;
export const OP_SETCLIENTID = 35;
export const OP_SETCLIENTID_CONFIRM = 36;
export const OP_VERIFY = 37;
export const OP_WRITE = 38;
export const OP_RELEASE_LOCKOWNER = 39;
export const OP_BACKCHANNEL_CTL = 40;
export const OP_BIND_CONN_TO_SESSION = 41;
export const OP_EXCHANGE_ID = 42;
export const OP_CREATE_SESSION = 43;
export const OP_DESTROY_SESSION = 44;
export const OP_FREE_STATEID = 45;
export const OP_GET_DIR_DELEGATION = 46;
export const OP_GETDEVICEINFO = 47;
export const OP_GETDEVICELIST = 48;
export const OP_LAYOUTCOMMIT = 49;
export const OP_LAYOUTGET = 50;
export const OP_LAYOUTRETURN = 51;
export const OP_SECINFO_NO_NAME = 52;
export const OP_SEQUENCE = 53;
export const OP_SET_SSV = 54;
export const OP_TEST_STATEID = 55;
export const OP_WANT_DELEGATION = 56;
export const OP_DESTROY_CLIENTID = 57;
export const OP_RECLAIM_COMPLETE = 58;
export const OP_ALLOCATE = 59;
export const OP_COPY = 60;
export const OP_COPY_NOTIFY = 61;
export const OP_DEALLOCATE = 62;
export const OP_IO_ADVISE = 63;
export const OP_LAYOUTERROR = 64;
export const OP_LAYOUTSTATS = 65;
export const OP_OFFLOAD_CANCEL = 66;
export const OP_OFFLOAD_STATUS = 67;
export const OP_READ_PLUS = 68;
export const OP_SEEK = 69;
export const OP_WRITE_SAME = 70;
export const OP_CLONE = 71;
export const OP_ILLEGAL = 10044;
/** The highest operation number of minor version 2 (RFC 7862); above it is OP_ILLEGAL. */
export const OP_MAX = OP_CLONE;

// nfsstat4
export const NFS4_OK = 0;
export const NFS4ERR_PERM = 1;
export const NFS4ERR_NOENT = 2;
export const NFS4ERR_IO = 5;
export const NFS4ERR_NXIO = 6;
export const NFS4ERR_ACCESS = 13;
export const NFS4ERR_EXIST = 17;
export const NFS4ERR_XDEV = 18;
export const NFS4ERR_NOTDIR = 20;
export const NFS4ERR_ISDIR = 21;
export const NFS4ERR_INVAL = 22;
export const NFS4ERR_FBIG = 27;
export const NFS4ERR_NOSPC = 28;
export const NFS4ERR_ROFS = 30;
export const NFS4ERR_MLINK = 31;
export const NFS4ERR_NAMETOOLONG = 63;
export const NFS4ERR_NOTEMPTY = 66;
export const NFS4ERR_DQUOT = 69;
export const NFS4ERR_STALE = 70;
export const NFS4ERR_BADHANDLE = 10001;
export const NFS4ERR_BAD_COOKIE = 10003;
export const NFS4ERR_NOTSUPP = 10004;
export const NFS4ERR_TOOSMALL = 10005;
export const NFS4ERR_SERVERFAULT = 10006;
export const NFS4ERR_BADTYPE = 10007;
export const NFS4ERR_DELAY = 10008;
export const NFS4ERR_SAME = 10009;
export const NFS4ERR_DENIED = 10010;
export const NFS4ERR_EXPIRED = 10011;
export const NFS4ERR_LOCKED = 10012;
export const NFS4ERR_GRACE = 10013;
export const NFS4ERR_SHARE_DENIED = 10015;
export const NFS4ERR_WRONGSEC = 10016;
export const NFS4ERR_CLID_INUSE = 10017;
export const NFS4ERR_RESOURCE = 10018;
export const NFS4ERR_NOFILEHANDLE = 10020;
export const NFS4ERR_MINOR_VERS_MISMATCH = 10021;
export const NFS4ERR_STALE_CLIENTID = 10022;
export const NFS4ERR_STALE_STATEID = 10023;
export const NFS4ERR_OLD_STATEID = 10024;
export const NFS4ERR_BAD_STATEID = 10025;
export const NFS4ERR_BAD_SEQID = 10026;
export const NFS4ERR_NOT_SAME = 10027;
export const NFS4ERR_LOCK_RANGE = 10028;
export const NFS4ERR_SYMLINK = 10029;
export const NFS4ERR_RESTOREFH = 10030;
export const NFS4ERR_ATTRNOTSUPP = 10032;
export const NFS4ERR_NO_GRACE = 10033;
export const NFS4ERR_RECLAIM_BAD = 10034;
export const NFS4ERR_BADXDR = 10036;
export const NFS4ERR_LOCKS_HELD = 10037;
export const NFS4ERR_OPENMODE = 10038;
export const NFS4ERR_BADOWNER = 10039;
export const NFS4ERR_BADCHAR = 10040;
export const NFS4ERR_BADNAME = 10041;
export const NFS4ERR_BAD_RANGE = 10042;
export const NFS4ERR_OP_ILLEGAL = 10044;
export const NFS4ERR_BADSESSION = 10052;
export const NFS4ERR_BADSLOT = 10053;
export const NFS4ERR_COMPLETE_ALREADY = 10054;
export const NFS4ERR_SEQ_MISORDERED = 10063;
export const NFS4ERR_SEQUENCE_POS = 10064;
export const NFS4ERR_REQ_TOO_BIG = 10065;
export const NFS4ERR_REP_TOO_BIG = 10066;
export const NFS4ERR_RETRY_UNCACHED_REP = 10068;
export const NFS4ERR_TOO_MANY_OPS = 10070;
export const NFS4ERR_OP_NOT_IN_SESSION = 10071;
export const NFS4ERR_CLIENTID_BUSY = 10074;
export const NFS4ERR_SEQ_FALSE_RETRY = 10076;
export const NFS4ERR_BAD_HIGH_SLOT = 10077;
export const NFS4ERR_ENCR_ALG_UNSUPP = 10079;
export const NFS4ERR_NOT_ONLY_OP = 10081;
export const NFS4ERR_WRONG_TYPE = 10083;

// nfs_ftype4
export const NF4REG = 1;
export const NF4DIR = 2;
export const NF4BLK = 3;
export const NF4CHR = 4;
export const NF4LNK = 5;
export const NF4SOCK = 6;
export const NF4FIFO = 7;

// EXCHANGE_ID flags
export const EXCHGID4_FLAG_SUPP_MOVED_REFER = 0x1;
export const EXCHGID4_FLAG_SUPP_MOVED_MIGR = 0x2;
export const EXCHGID4_FLAG_BIND_PRINC_STATEID = 0x100;
export const EXCHGID4_FLAG_USE_NON_PNFS = 0x10000;
export const EXCHGID4_FLAG_USE_PNFS_MDS = 0x20000;
export const EXCHGID4_FLAG_USE_PNFS_DS = 0x40000;
export const EXCHGID4_FLAG_MASK_PNFS = 0x70000;
export const EXCHGID4_FLAG_UPD_CONFIRMED_REC_A = 0x40000000;
export const EXCHGID4_FLAG_CONFIRMED_R = 0x80000000;
export const SP4_NONE = 0;

// CREATE_SESSION flags and BIND_CONN_TO_SESSION directions
export const CREATE_SESSION4_FLAG_PERSIST = 0x1;
export const CREATE_SESSION4_FLAG_CONN_BACK_CHAN = 0x2;
export const CDFC4_FORE = 0x1;
export const CDFC4_BACK = 0x2;
export const CDFC4_FORE_OR_BOTH = 0x3;
export const CDFC4_BACK_OR_BOTH = 0x7;
export const CDFS4_FORE = 0x1;

// OPEN
export const OPEN4_SHARE_ACCESS_READ = 1;
export const OPEN4_SHARE_ACCESS_WRITE = 2;
export const OPEN4_SHARE_ACCESS_BOTH = 3;
export const OPEN4_SHARE_DENY_NONE = 0;
export const OPEN4_NOCREATE = 0;
export const OPEN4_CREATE = 1;
export const UNCHECKED4 = 0;
export const GUARDED4 = 1;
export const EXCLUSIVE4 = 2;
export const EXCLUSIVE4_1 = 3;
export const CLAIM_NULL = 0;
export const CLAIM_PREVIOUS = 1;
export const CLAIM_DELEGATE_CUR = 2;
export const CLAIM_DELEGATE_PREV = 3;
export const CLAIM_FH = 4;
export const CLAIM_DELEG_PREV_FH = 5;
export const CLAIM_DELEG_CUR_FH = 6;
export const OPEN4_RESULT_LOCKTYPE_POSIX = 0x4;
export const OPEN_DELEGATE_NONE = 0;
export const OPEN_DELEGATE_NONE_EXT = 3;
export const WND4_NOT_WANTED = 0;

// LOCK
export const READ_LT = 1;
export const WRITE_LT = 2;
export const READW_LT = 3;
export const WRITEW_LT = 4;

// WRITE
export const UNSTABLE4 = 0;
export const DATA_SYNC4 = 1;
export const FILE_SYNC4 = 2;

// SEEK
export const NFS4_CONTENT_DATA = 0;
export const NFS4_CONTENT_HOLE = 1;

// settime4
export const SET_TO_SERVER_TIME4 = 0;
export const SET_TO_CLIENT_TIME4 = 1;

// secinfo
export const SECINFO_STYLE4_CURRENT_FH = 0;
export const SECINFO_STYLE4_PARENT = 1;
export const AUTH_SYS_FLAVOR = 1;
