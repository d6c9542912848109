/** Data-aware LoRA initialisations (PiSSA, OLoRA, CorDA, LoRA-GA) and PEFT's random ones. */
export { collectCovariances, estimateGradients } from './calibration';
export { dampCovariance, svdLowRank, thinQr, thinSvd, type LoraInitResult, type StoredWeight } from './linalg';
export {
  cordaDecompose,
  cordaInit,
  LORA_GA_DEFAULTS,
  loraGaInit,
  oloraInit,
  pissaInit,
  randomInit,
  type CordaMode,
  type LoraGaDirection,
  type LoraGaOptions,
  type LoraGaScale,
} from './methods';
export { CALIBRATED_INITS, loraInitProvider, RESIDUAL_INITS, type LoraInitOptions } from './provider';
