-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "maxLogBytes" BIGINT;
