/**
 * Toolbar controls bound to the panel's persisted UI state: a labelled select or checkbox whose
 * change is stored with panel.setUI (the patch the caller builds from the new value) and then
 * shown by `then` (usually the panel's render).
 */
import type { Panel } from './bootstrap';
import { checkbox, labelled, select } from './dom';

export interface SettingControls<UI extends object> {
  select<V extends string>(label: string, options: readonly { value: V; label: string }[], value: V, patch: (v: V) => Partial<UI>, id: string): HTMLLabelElement;
  checkbox(label: string, checked: boolean, patch: (v: boolean) => Partial<UI>, id: string): HTMLLabelElement;
}

export function settingControls<UI extends object>(panel: Panel<UI>, then: () => void): SettingControls<UI> {
  const apply = (patch: Partial<UI>) => {
    panel.setUI(patch);
    then();
  };
  return {
    select: (label, options, value, patch, id) => labelled(label, select(options, value, (v) => apply(patch(v)), { id })),
    checkbox: (label, checked, patch, id) => labelled(label, checkbox(checked, (v) => apply(patch(v)), { id })),
  };
}
