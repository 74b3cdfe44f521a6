export { DockerignoreError, parseDockerignore } from './dockerignore.js';
export {
  goFileMode,
  MODE_CHAR_DEVICE,
  MODE_DEVICE,
  MODE_DIR,
  MODE_NAMED_PIPE,
  MODE_PERM,
  MODE_SETGID,
  MODE_SETUID,
  MODE_SOCKET,
  MODE_STICKY,
  MODE_SYMLINK,
  type UnixFileType,
  unixModeFromGo,
} from './filemode.js';
export {
  cleanPath,
  type MatchInfo,
  type MatchType,
  Pattern,
  PatternError,
  type PatternErrorCode,
  PatternMatcher,
} from './patternmatcher.js';
export {
  type WalkEntry,
  WalkError,
  type WalkErrorCode,
  type WalkOptions,
  walk,
} from './walk.js';
