// VS Code's platform targets (vsce --target) and the per-platform binaries each package carries:
// Dawn from the `webgpu` package (its folder names: one universal build for macOS), and the native
// kernels as scripts/build-native.mjs names them (process.platform-process.arch). The sidecar looks
// them up the same way (sidecar/src/backend/webgpu/dawn.ts, backend/native/addon.ts).

/** target → { dawn: the webgpu package's dist folder or null, native: dist/native folder name or null } */
export const TARGETS = {
  'linux-x64': { dawn: 'linux-x64', native: 'linux-x64' },
  'linux-arm64': { dawn: 'linux-arm64', native: 'linux-arm64' },
  'darwin-x64': { dawn: 'darwin-universal', native: 'darwin-x64' },
  'darwin-arm64': { dawn: 'darwin-universal', native: 'darwin-arm64' },
  'win32-x64': { dawn: 'win32-x64', native: 'win32-x64' },
  'win32-arm64': { dawn: 'win32-arm64', native: 'win32-arm64' },
  // musl and 32-bit ARM: no Dawn build (glibc / 64-bit only); WebAssembly there.
  'alpine-x64': { dawn: null, native: null },
  'alpine-arm64': { dawn: null, native: null },
  'linux-armhf': { dawn: null, native: null },
};

/** The binaries of one target; throws for targets without a Node.js sidecar (web) or unknown ones. */
export function bundleTarget(target) {
  const t = TARGETS[target];
  if (!t || !Object.hasOwn(TARGETS, target)) throw new Error(`unknown package target '${target}' (${Object.keys(TARGETS).join(', ')})`);
  return t;
}
