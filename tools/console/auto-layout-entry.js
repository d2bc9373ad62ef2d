// esbuild entry: bpmn-auto-layout (ESM only) as one browser script exposing the global BpmnAutoLayout.
export { layoutProcess } from 'bpmn-auto-layout';
