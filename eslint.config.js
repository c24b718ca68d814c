// Lint run by `npm test`: TypeScript's recommended rules where they find real mistakes, and no import
// cycles (a cycle between modules is how "one concern per file" quietly erodes).
import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'native/build/**', 'bench/work/**', 'bench/results/**', 'wip/**', '.tap/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })],
    },
    rules: {
      'import-x/no-cycle': 'error',
      // tsc's noUnusedLocals/noUnusedParameters already refuse these, with the project's own exceptions.
      '@typescript-eslint/no-unused-vars': 'off',
    },
  },
);
